"""scripts/train_multicoil_agnostic.sh end to end (tiny sizes) and the coil-combined training
data it trains on (kspace_ldm/data/coil_combine.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kspace_ldm.data.coil_combine import coil_combine_file, combine_kspace
from kspace_ldm.data.fastmri import FastMRIFile
from kspace_ldm.data.synth import synth_dataset
from kspace_ldm.errors import InputError
from kspace_ldm.ops import fft2c, ifft2c
from kspace_ldm.physics.espirit import espirit_maps
from kspace_ldm.physics.transforms import center_crop

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"shape": (32, 32), "recon_size": 16, "slices": 2}


def test_combined_kspace_is_the_sense_adjoint_of_the_espirit_maps(tmp_path, one_thread):
    src = synth_dataset(tmp_path / "d", 0, 0, 1, coils=5, coil_geometry="varied", seed=3, **SMALL)
    src = src["test"][0]
    with FastMRIFile(src) as f:
        k = torch.from_numpy(f.read_volume_kspace())  # [2, 5, 32, 32]
        rss = f.read_volume_target("reconstruction_rss")
    # reference: the plain PyTorch S^H F^-1 y with the same maps
    maps = espirit_maps(k)
    ref = fft2c((maps.conj() * ifft2c(k)).sum(1, keepdim=True))[:, 0]
    got = combine_kspace(k)
    assert torch.allclose(got, ref, atol=1e-5 * float(ref.abs().max()))  # measured ~1e-7

    out = coil_combine_file(src, tmp_path / "c" / src.name)
    with FastMRIFile(out) as f:
        assert not f.is_multicoil and f.kspace_shape == (2, 32, 32)
        assert torch.equal(torch.from_numpy(f.read_volume_kspace()), got)
        esc = f.read_volume_target("reconstruction_esc")
        np.testing.assert_array_equal(f.read_volume_target("reconstruction_rss"), rss)
        assert f.attrs["coil_combine"] == "espirit" and f.attrs["source_coils"] == 5
    np.testing.assert_allclose(
        esc, center_crop(ifft2c(got[:, None])[:, 0].abs(), (16, 16)).numpy(), rtol=1e-6
    )
    # |S^H x| with sum |S|^2 = 1 is the RSS inside the ESPIRiT support (the object here);
    # measured: relative L2 difference 0.02 (noise outside the object, cropped maps)
    assert np.linalg.norm(esc - rss) / np.linalg.norm(rss) < 0.1
    with pytest.raises(InputError, match="is single-coil"):
        coil_combine_file(out, tmp_path / "again.h5")


@pytest.mark.slow
def test_train_multicoil_agnostic_script_tiny(tmp_path):
    """The recipe end to end with tiny data and step counts: data, coil combination, both stages,
    and the `kldm recon --coil-combine espirit` check on the multi-coil validation split."""
    env = dict(
        os.environ,
        AE_STEPS="2",
        LDM_STEPS="2",
        EVERY="2",
        TRAIN="4",
        VAL="1",
        SLICES="4",  # 16 training slices: the LDM batch (16) needs them
        SHAPE="48x48",
        RECON="32",
        KLDM=str(Path(sys.executable).parent / "kldm"),
        PY=sys.executable,
    )
    work = tmp_path / "work"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_multicoil_agnostic.sh"), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the first stage is single-coil (2 channels: real, imaginary) though the data are 4/8 coils
    cfg = (work / "ae" / "best" / "config.yaml").read_text()
    assert "in_channels: 2" in cfg, cfg
    coils = set()
    for p in sorted((work / "data" / "multicoil" / "multicoil_train").glob("*.h5")):
        with FastMRIFile(p) as f:
            coils.add(f.num_coils)
    assert coils <= {4, 8}
    for s in ("zero-filled", "cgs"):
        doc = json.loads((work / "check" / f"{s}.json").read_text())
        assert np.isfinite(doc["summary"]["psnr"]["mean"]), s
    import h5py

    with h5py.File(next((work / "check" / "cgs").glob("*.h5"))) as f:
        assert f.attrs["coil_combine"] == "espirit"
    assert "cgs: PSNR" in proc.stdout
