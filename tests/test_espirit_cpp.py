"""ESPIRiT in C++ (kldm::espirit_maps, csrc/sampler/espirit.cpp) against the Python module
(kspace_ldm.physics.espirit): the same calibration regions, maps and eigenvalues."""

from __future__ import annotations

import pytest
import torch

import kspace_ldm.ops  # noqa: F401  (loads libkldm and the _C module)
from kspace_ldm import _C
from kspace_ldm.data.synth import synth_volume
from kspace_ldm.physics.espirit import calibration_region, espirit_maps

# C++ vs Python maps, after aligning each pixel's phase (the eigenvector's phase is only fixed up
# to the reference's rounding): max |S_cpp e^{i phi} - S_py| over the support < 1e-4. Both run
# the same libtorch ops in the same order: measured worst case 0 (bit-identical maps and
# eigenvalues in every case below, CPU, 1 thread); the bound leaves room for other LAPACK thread
# splits and devices.
MAPS_ATOL = 1e-4
EVALS_ATOL = 1e-5


def _kspace(coils: int, shape=(48, 40), slices: int = 2, seed: int = 3) -> torch.Tensor:
    vol = synth_volume(seed, coils=coils, shape=shape, recon_size=min(shape) - 8, slices=slices,
                       coil_geometry="varied")  # fmt: skip
    return torch.from_numpy(vol.kspace)  # [S, C, H, W] complex64


def _columns(w: int, acs: int, every: int = 3) -> torch.Tensor:
    m = torch.zeros(w, dtype=torch.bool)
    m[::every] = True
    m[w // 2 - acs // 2 : w // 2 - acs // 2 + acs] = True
    return m


def _aligned_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over pixels and coils of |a e^{i phi} - b|, phi the per-pixel phase of <a, b>."""
    inner = (a.conj() * b).sum(dim=-3, keepdim=True)  # [B, 1, H, W]
    phase = torch.where(inner.abs() > 0, inner / inner.abs().clamp_min(1e-30), 1)
    return float((a * phase - b).abs().max())


def _random_2d(h: int, w: int) -> torch.Tensor:
    """A 2-D mask: 30 % random samples and a 10 x 12 centre block (rows limit the columns)."""
    m = torch.rand(h, w, generator=torch.Generator().manual_seed(2)) < 0.3
    m[h // 2 - 5 : h // 2 + 5, w // 2 - 6 : w // 2 + 6] = True
    m[h // 2 - 5 : h // 2 + 5, [w // 2 - 7, w // 2 + 6]] = False  # the block's edges
    return m


def _full(h: int, w: int) -> torch.Tensor:
    return torch.ones(w, dtype=torch.bool)


CASES = {
    # name: (coils, (H, W), mask maker, options)
    "8coils_1d_acs12": (8, (48, 40), lambda h, w: _columns(w, 12), {}),
    "4coils_narrow_acs4": (4, (48, 40), lambda h, w: _columns(w, 4, 4), {}),  # kernel 6x3
    "6coils_2d_random": (6, (40, 40), _random_2d, {}),
    "5coils_full_kernel4_crop0": (5, (32, 36), _full, {"kernel": 4, "crop": 0.0}),
    "4coils_phase_ref_coil1": (4, (32, 32), lambda h, w: _columns(w, 10), {"phase_ref": 1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cpp_maps_match_python(case, one_thread):
    coils, shape, make_mask, opts = CASES[case]
    k = _kspace(coils, shape)
    mask = make_mask(*shape)
    k = k * mask
    want, ev_want = espirit_maps(k, return_eigenvalues=True, **opts)
    cpp_opts = dict(opts)
    if "phase_ref" in cpp_opts:
        cpp_opts["phase_ref"] = int(cpp_opts["phase_ref"])
    got, ev_got = _C.espirit_maps(k, **cpp_opts)
    assert got.shape == want.shape and got.dtype == want.dtype == torch.complex64
    assert ev_got.shape == ev_want.shape and ev_got.dtype == torch.float32
    # the same support after the eigenvalue crop, and maps equal after phase alignment
    assert torch.equal(got.abs().sum(1) > 0, want.abs().sum(1) > 0)
    err = _aligned_err(got, want)
    assert err < MAPS_ATOL, err
    assert float((ev_got - ev_want).abs().max()) < EVALS_ATOL
    # the PCA / coil reference fixes the phase: the maps agree without any alignment too
    assert float((got - want).abs().max()) < MAPS_ATOL


def test_cpp_complex128_and_no_phase_reference(one_thread):
    k = _kspace(4, (32, 32), slices=1).to(torch.complex128) * _columns(32, 10)
    want = espirit_maps(k, phase_ref="none")
    got, _ = _C.espirit_maps(k, phase_ref=-2)
    assert got.dtype == torch.complex128
    # eigh's per-pixel phase is arbitrary without a reference: compare after alignment only
    assert _aligned_err(got, want) < 1e-9


def test_calibration_region_matches_python():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        h, w = 20 + trial % 7, 18 + trial % 5
        sampled = torch.rand(h, w, generator=g) < 0.4
        r = int(torch.randint(2, 10, (1,), generator=g))
        sampled[h // 2 - r : h // 2 + r, w // 2 - r + 1 : w // 2 + r] = True
        if trial % 5 == 0:
            sampled[:, w // 2] = False  # the centre unsampled: an empty region
        for size in (24, 6):
            assert _C.calibration_region(sampled, size) == calibration_region(sampled, size)


def test_cpp_errors_are_one_line():
    k = _kspace(4, (32, 32), slices=1)
    no_acs = torch.zeros(32, dtype=torch.bool)
    no_acs[::4] = True
    with pytest.raises(_C.SamplerError, match=r"no calibration region: .* sample 0 is 24x1"):
        _C.espirit_maps(k * no_acs)
    with pytest.raises(_C.SamplerError, match="complex"):
        _C.espirit_maps(k.real)
    with pytest.raises(_C.SamplerError, match="threshold"):
        _C.espirit_maps(k, threshold=1.5)
    with pytest.raises(_C.SamplerError, match="phase_ref"):
        _C.espirit_maps(k, phase_ref=4)
