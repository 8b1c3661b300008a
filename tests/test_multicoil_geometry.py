"""The fastMRI multi-coil geometry end to end through the coil-agnostic path: 15 coils,
640 x 368 k-space -> 320 x 320 RSS target, a single-coil model, ``kldm recon`` with the Python and
the C++ backend and the kldm-recon executable, all on the same test-format file.

Two models, for two different claims:

* **the reference configs' level counts** (``configs/ae_kl_4.yaml``: f = 8;
  ``configs/ldm_ref.yaml``: UNet multiple 8, so the 80 x 46 latent is padded to 80 x 48 as in
  the real runs) with tiny channel widths, untrained
  (:func:`kspace_ldm.bench.untrained.write_untrained_run`): every stage runs at this geometry in
  both backends and the executable, and every exported network equals its eager twin on the
  inputs the sampler gives it. The two backends' *end-to-end* outputs are not compared on this
  model: untrained deep networks amplify float32 rounding (measured 2026-12-03: one decode turns
  a 7e-6 relative change of its latent into 1.7e-4, one encode 5x, one denoiser call 4-6x; the
  Python sampler alone moves 5.4e-2 when the maps change by 1e-6 relative), so the 9.4e-2
  C++/Python gap once marked here as a bug is the amplified 1e-6 difference of AOTInductor vs
  eager kernels, not a backend difference.
* **the bundled (trained) demo model** exported at 640 x 368: the same 15-coil file through both
  backends and the executable agrees end to end (measured 5.6e-7 relative; the Python sampler's
  own sensitivity to a 1e-6 change of the maps is 1.4e-6 there: a trained model does not
  amplify).

~4 min on 2 cores (two exports, ~30 s of compile each, and 15-coil cgs slices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run
from helpers import rel_err, run_recon_tool

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
OPTS = ["--sampler", "cgs", "--steps", 2, "--t0", 50, "--batch-size", 1]


def _mc15_files(tmp_path: Path) -> tuple[Path, Path]:
    """A fully sampled 15-coil file and its test-format copy: 4x random mask, 8 % centre (29 ACS
    columns)."""
    vol = synth_volume(9, coils=COILS, shape=(H, W), recon_size=R, slices=1)
    full = write_fastmri_file(tmp_path / "full" / "mc15.h5", vol.kspace, header=vol.header,
                              reconstruction_rss=vol.reconstruction_rss)  # fmt: skip
    mask = np.asarray(create_mask("random", (0.08,), (4,))((H, W), seed=3).mask).reshape(-1)
    return full, write_challenge_test_file(full, tmp_path / "in" / "mc15.h5", mask != 0, 4, 29)


def _recon_both(src: Path, ldm: Path, exp: Path, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    run("recon", src, "--out", tmp_path / "py", "--model", ldm, "--coil-combine", "espirit",
        *OPTS)  # fmt: skip
    run("recon", src, "--out", tmp_path / "cpp", "--model", exp, "--backend", "cpp",
        "--coil-combine", "espirit", *OPTS)  # fmt: skip
    py = read_reconstruction(tmp_path / "py" / src.name)
    cpp = read_reconstruction(tmp_path / "cpp" / src.name)
    assert py.shape == cpp.shape == (1, R, R)
    assert np.isfinite(py).all() and np.isfinite(cpp).all()
    return py, cpp


def _package_parity(ldm: Path, exp: Path, src: Path) -> dict[str, float]:
    """Relative error of each exported network vs its eager twin, on the inputs the sampler gives
    it at this geometry (the normalised coil-combined start, its latent, t = 50)."""
    from torch._inductor import aoti_load_package

    from kspace_ldm.data.fastmri import FastMRIFile
    from kspace_ldm.latents import estimate_norm_stats, normalize_with
    from kspace_ldm.sampling.cgs import KspaceLDMSampler, _as_mask

    with FastMRIFile(src) as f:
        k = torch.as_tensor(f.read_kspace(0))[None].to(torch.complex64)  # [1, C, H, W]
    mask = (k != 0).any(dim=(0, 1, 2)).float()  # [W] the sampled columns
    y = k[:, :1].contiguous()  # one coil: the networks' input shape [1, 1, H, W]
    sampler = KspaceLDMSampler.from_run(ldm)
    stats = estimate_norm_stats(y, _as_mask(mask, y), sampler.norm, sampler.ldm.norm_ratio)
    x = normalize_with(sampler.norm, y, stats)  # [1, 2, H, W]
    out = {}
    with torch.no_grad():
        z, pad = sampler.encode(x)  # [1, 4, 80, 46]
        mean = aoti_load_package(str(exp / "encoder.pt2"))(x.contiguous())[0]
        out["encoder"] = rel_err(mean, z)
        out["decoder"] = rel_err(
            aoti_load_package(str(exp / "decoder.pt2"))(z.contiguous())[0],
            sampler.decode(z, pad),
        )  # fmt: skip
        t = torch.full((1,), 50, dtype=torch.long)
        out["denoiser"] = rel_err(
            aoti_load_package(str(exp / "denoiser.pt2"))(z.contiguous(), t)[0],
            sampler.model_output(z, 50),
        )  # fmt: skip
    return out


@pytest.mark.slow
def test_fastmri_multicoil_geometry_reference_levels(tmp_path):
    from kspace_ldm.bench.untrained import write_untrained_run
    from kspace_ldm.config import config_to_yaml, load_config

    # a single-coil untrained run at the true geometry
    for name, cfg, sets in (("ae.yaml", "ae_kl_4.yaml", AE_SET), ("ldm.yaml", "ldm_ref.yaml",
                                                                  LDM_SET)):  # fmt: skip
        (tmp_path / name).write_text(config_to_yaml(load_config(CONFIGS / cfg, sets)))
    ldm = write_untrained_run(tmp_path / "ae.yaml", tmp_path / "ldm.yaml", tmp_path / "run",
                              coils=1, size=(H, W))  # fmt: skip
    exp = tmp_path / "exp"
    res = run("export", ldm, "--out", exp, "--size", f"{H}x{W}", "--no-guidance")
    assert f"1x{H}x{W} k-space, latent 4x80x46" in res.output

    full, src = _mc15_files(tmp_path)
    _, cpp = _recon_both(src, ldm, exp, tmp_path)
    # measured worst 1.1e-5 (the decoder; its own float32-vs-float64 error is 8e-6)
    for net, err in _package_parity(ldm, exp, src).items():
        assert err < 1e-4, f"{net}: exported vs eager {err:.2e}"

    # the executable runs at this geometry too; its output is compared with the CLI's on the
    # trained model below (here thread-count-dependent rounding is amplified as described above:
    # measured 3e0 relative on single pixels between the two in CI)
    exe, _ = run_recon_tool(src, tmp_path / "exe" / src.name, "--model", exp, "--steps", 2,
                            "--t0", 50, "--batch-size", 1)  # fmt: skip
    assert exe.shape == cpp.shape and np.isfinite(exe).all()
    # evaluate against the file's RSS target: the metrics run at this geometry
    js = tmp_path / "m.json"
    run("evaluate", "--pred", tmp_path / "cpp", "--target", full.parent, "--json", js)


@pytest.mark.slow
def test_fastmri_multicoil_geometry_backend_parity(tmp_path):
    from kspace_ldm.pretrained import demo_model

    ldm, _ = demo_model()
    exp = tmp_path / "exp"
    res = run("export", ldm, "--out", exp, "--size", f"{H}x{W}", "--no-guidance")
    assert f"1x{H}x{W} k-space" in res.output
    _, src = _mc15_files(tmp_path)
    py, cpp = _recon_both(src, ldm, exp, tmp_path)
    # measured 5.6e-7 (2026-12-03); the parity tests' bound is 1e-4
    assert np.linalg.norm(cpp - py) / np.linalg.norm(py) < 1e-4
    # the same C++ sampler behind the CLI and the kldm-recon executable
    exe, _ = run_recon_tool(src, tmp_path / "exe" / src.name, "--model", exp, "--steps", 2,
                            "--t0", 50, "--batch-size", 1)  # fmt: skip
    assert np.linalg.norm(exe - cpp) / np.linalg.norm(cpp) < 1e-5
