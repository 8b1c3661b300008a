"""The fastMRI multi-coil geometry end to end through the coil-agnostic path (issue 14): 15 coils,
640 x 368 k-space -> 320 x 320 RSS target, a single-coil model, ``kldm recon`` with the Python and
the C++ backend and the kldm-recon executable, all on the same test-format file.

The model is an untrained run of the reference configs' level counts (``configs/ae_kl_4.yaml``:
f = 8; ``configs/ldm_ref.yaml``: UNet multiple 8, so the 80 x 46 latent is padded to 80 x 48 as in
the real runs) with tiny channel widths, written by :func:`kspace_ldm.bench.untrained.
write_untrained_run` (no training: the path's mechanics and the backends' parity do not depend on
the weights). One slice, 2 DDIM steps. ~90 s on 2 cores (the export's compile is ~30 s of it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_runner import run
from helpers import run_recon_tool

from kspace_ldm.data.fastmri import read_reconstruction, write_fastmri_file
from kspace_ldm.data.masks import create_mask
from kspace_ldm.data.synth import synth_volume, write_challenge_test_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The tiny widths of tests/test_geometry_matrix.py (REF_AE, REF_LDM).
AE_SET = ["model.chans=4", "model.latent_channels=4", "model.norm_num_groups=4",
          "model.layers_per_block=1"]  # fmt: skip
LDM_SET = ["ldm.block_out_channels=[8, 8, 16, 16]", "ldm.norm_num_groups=4",
           "ldm.layers_per_block=1"]  # fmt: skip
COILS, H, W, R = 15, 640, 368, 320


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="KNOWN BUG, open: at this geometry (untrained reference-size networks) the C++ backend "
    "differs from Python by 9.4e-2 relative (2026-12-02; at 4x32x24 with tiny networks the same "
    "path agrees < 1e-4, tests/test_multicoil_cpp.py); not yet diagnosed",
)
def test_fastmri_multicoil_geometry_coil_agnostic(tmp_path):
    from kspace_ldm.bench.untrained import write_untrained_run
    from kspace_ldm.config import config_to_yaml, load_config

    # a single-coil untrained run at the true geometry
    for name, cfg, sets in (("ae.yaml", "ae_kl_4.yaml", AE_SET), ("ldm.yaml", "ldm_ref.yaml",
                                                                  LDM_SET)):  # fmt: skip
        (tmp_path / name).write_text(config_to_yaml(load_config(CONFIGS / cfg, sets)))
    ldm = write_untrained_run(tmp_path / "ae.yaml", tmp_path / "ldm.yaml", tmp_path / "run",
                              coils=1, size=(H, W))  # fmt: skip
    res = run("export", ldm, "--out", tmp_path / "exp", "--size", f"{H}x{W}", "--no-guidance")
    assert f"1x{H}x{W} k-space, latent 4x80x46" in res.output

    # a 15-coil test-format file: 4x random mask, 8 % centre (29 ACS columns)
    vol = synth_volume(9, coils=COILS, shape=(H, W), recon_size=R, slices=1)
    full = write_fastmri_file(tmp_path / "full" / "mc15.h5", vol.kspace, header=vol.header,
                              reconstruction_rss=vol.reconstruction_rss)  # fmt: skip
    mask = np.asarray(create_mask("random", (0.08,), (4,))((H, W), seed=3).mask).reshape(-1)
    src = write_challenge_test_file(full, tmp_path / "in" / "mc15.h5", mask != 0, 4, 29)

    opts = ["--sampler", "cgs", "--steps", 2, "--t0", 50, "--batch-size", 1]
    run("recon", src, "--out", tmp_path / "py", "--model", ldm, "--coil-combine", "espirit",
        *opts)  # fmt: skip
    run("recon", src, "--out", tmp_path / "cpp", "--model", tmp_path / "exp", "--backend", "cpp",
        "--coil-combine", "espirit", *opts)  # fmt: skip
    py = read_reconstruction(tmp_path / "py" / src.name)
    cpp = read_reconstruction(tmp_path / "cpp" / src.name)
    assert py.shape == cpp.shape == (1, R, R) and np.isfinite(py).all()
    assert np.linalg.norm(cpp - py) / np.linalg.norm(py) < 1e-4

    out = tmp_path / "exe" / src.name
    exe, _ = run_recon_tool(
        src, out, "--model", tmp_path / "exp", "--steps", 2, "--t0", 50, "--batch-size", 1
    )
    np.testing.assert_allclose(exe, cpp, rtol=0, atol=1e-6 * np.abs(cpp).max())
    # evaluate against the file's RSS target: the metrics run at this geometry
    js = tmp_path / "m.json"
    run("evaluate", "--pred", tmp_path / "cpp", "--target", full.parent, "--json", js)
