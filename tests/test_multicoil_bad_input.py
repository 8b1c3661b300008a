"""Bad input on the multi-coil path through ``kldm recon``: one line naming the file, exit 2.

Covered elsewhere: no calibration region and ``--backend cpp`` for ``cgs``
(tests/test_sense_dc.py::test_cli_no_acs_and_cpp_backend_exit_2), a single-coil model with
``--coil-combine channels`` (coil-count mismatch, test_sense_dc.py), ``check_maps`` itself.
Here: the same checks for the CS baselines (which now share cgs's ESPIRiT maps), maps that do not
fit the data (wrong coil count, wrong grid, NaN, all zero) reaching ``kldm recon`` from the map
estimator, and non-finite multi-coil k-space.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run

from kspace_ldm.data.synth import synth_dataset, write_challenge_test_file
from kspace_ldm.errors import InputError
from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct

SMALL = {"shape": (32, 32), "recon_size": 16, "slices": 2}


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcbad")
    return synth_dataset(root, 0, 0, 1, coils=4, coil_geometry="varied", seed=7, **SMALL)["test"][0]


def _one_error_line(output: str, name: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("kldm: error")]
    assert len(errors) == 1 and name in errors[0], output
    assert "Traceback" not in output
    return errors[0]


def _model_args(sampler: str) -> list:
    if sampler != "cgs":
        return ["--sampler", sampler, "--cs-iters", 2]
    from kspace_ldm.pretrained import demo_model

    ldm_dir, _ = demo_model()
    return ["--sampler", "cgs", "--model", ldm_dir, "--steps", 1]


@pytest.mark.parametrize("sampler", ["cs-wavelet", "cs-tv"])
def test_cs_without_calibration_region_exit_2(mc_file, tmp_path, sampler):
    no_acs = np.zeros(32, dtype=bool)
    no_acs[::4] = True  # every 4th column: the centre column is sampled but has no neighbours
    src = write_challenge_test_file(mc_file, tmp_path / "t" / mc_file.name, no_acs, 4, 0)
    r = run("recon", src, "--out", tmp_path / "o", *_model_args(sampler), ok=False)
    assert r.exit_code == 2
    assert "no calibration region" in _one_error_line(r.output, src.name)


def _with_nan(maps: torch.Tensor) -> torch.Tensor:
    maps = maps.clone()
    maps[0, 0, 3, 3] = float("nan")
    return maps


BAD_MAPS = {
    "coil count": (lambda m: m[:, :3], "3 coil maps for k-space with 4 coils"),
    "grid": (lambda m: m[..., :16], "does not match"),
    "nan": (_with_nan, "NaN"),
    "zero": (torch.zeros_like, "all zero"),
}


@pytest.mark.parametrize("sampler", ["cgs", "cs-wavelet"])
@pytest.mark.parametrize("case", list(BAD_MAPS))
def test_maps_that_do_not_fit_exit_2(mc_file, tmp_path, monkeypatch, sampler, case):
    """Whatever the map estimator returns is checked before it is used: a map set with the wrong
    coil count or grid, NaN or no support is a one-line error naming the file, exit 2."""
    import kspace_ldm.physics.espirit as espirit

    spoil, message = BAD_MAPS[case]
    real = espirit.espirit_maps
    monkeypatch.setattr(espirit, "espirit_maps", lambda k, **kw: spoil(real(k, **kw)))
    r = run("recon", mc_file, "--out", tmp_path / "o", *_model_args(sampler), ok=False)
    assert r.exit_code == 2, r.output
    assert message in _one_error_line(r.output, mc_file.name)


def test_cs_api_checks_given_maps(mc_file):
    with h5py.File(mc_file) as f:
        k = torch.from_numpy(f["kspace"][:1])  # [1, 4, 32, 32]
    mask = torch.zeros(32, dtype=torch.bool)
    mask[12:20] = True
    mask[::3] = True
    y = k * mask
    maps = torch.ones(1, 3, 32, 32, dtype=torch.complex64) / 3**0.5
    with pytest.raises(InputError, match="3 coil maps for k-space with 4 coils"):
        cs_reconstruct("cs-tv", y, mask, CSOptions(iterations=1), maps=maps)
    maps = torch.full((1, 4, 32, 32), float("nan"), dtype=torch.complex64)
    with pytest.raises(InputError, match="cs-wavelet maps: coil maps contain NaN"):
        cs_reconstruct("cs-wavelet", y, mask, CSOptions(iterations=1), maps=maps)


@pytest.mark.parametrize("sampler", ["cgs", "cs-tv", "zero-filled"])
def test_nonfinite_multicoil_kspace_exit_2(mc_file, tmp_path, sampler):
    bad = tmp_path / "in" / mc_file.name
    bad.parent.mkdir()
    bad.write_bytes(mc_file.read_bytes())
    with h5py.File(bad, "r+") as f:
        k = f["kspace"][()]
        k[1, 2, 16, 16] = np.nan
        f["kspace"][...] = k
    args = ["--sampler", "zero-filled"] if sampler == "zero-filled" else _model_args(sampler)
    r = run("recon", bad, "--out", tmp_path / "o", *args, ok=False)
    assert r.exit_code == 2, r.output
    line = _one_error_line(r.output, bad.name)
    assert "NaN" in line or "non-finite" in line, line
