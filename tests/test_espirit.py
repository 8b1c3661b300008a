"""ESPIRiT coil sensitivities: against known maps, against ``bart ecalib``, SENSE consistency."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from kspace_ldm.bench.bart import read_cfl, write_cfl
from kspace_ldm.errors import InputError
from kspace_ldm.physics.coils import estimate_sensitivities
from kspace_ldm.physics.espirit import ESPIRIT_DEFAULTS, calibration_region, espirit_maps
from kspace_ldm.physics.fft import fft2c, ifft2c


def _phantom(coils: int, n: int = 64, seed: int = 0, noise: float = 0.0):
    """Object [n, n] (soft ellipse, smooth phase), true maps [C, n, n] (sum |S|^2 = 1), k-space
    [1, C, n, n] complex64 and the object support."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(np.float64) - n // 2
    r = np.sqrt((yy / (0.32 * n)) ** 2 + (xx / (0.26 * n)) ** 2)
    mag = np.clip((1 - r) * 8, 0, 1) * (1 + 0.3 * np.cos(xx / 3.0) * np.sin(yy / 4.0))
    obj = mag * np.exp(1j * (0.5 + 0.02 * xx - 0.015 * yy))
    ang = 2 * np.pi * (np.arange(coils) + g.uniform(-0.2, 0.2, coils)) / coils
    cy, cx = 0.45 * n * np.sin(ang), 0.45 * n * np.cos(ang)
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    s = np.exp(-d2 / (2 * (0.35 * n) ** 2)) * np.exp(
        1j * (g.uniform(-3, 3, coils)[:, None, None] + np.sqrt(d2) / (0.8 * n))
    )
    s /= np.sqrt((np.abs(s) ** 2).sum(0))
    img = torch.from_numpy(s * obj[None]).to(torch.complex64)[None]
    k = fft2c(img)
    if noise:
        k = k + noise * torch.randn(
            k.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed)
        )
    support = torch.from_numpy(mag > 0.05)
    return k, torch.from_numpy(s).to(torch.complex64), support


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel phase-invariant similarity |<a, b>| / (|a| |b|) over the coil dim 0."""
    num = (a.conj() * b).sum(0).abs()
    return num / (a.abs().square().sum(0).sqrt() * b.abs().square().sum(0).sqrt()).clamp_min(1e-12)


def test_matches_true_maps_and_sense_identity(one_thread):
    k, s_true, support = _phantom(8, seed=1)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[::4] = True
    mask[26:38] = True  # 12 ACS columns (x 24 rows used)
    maps, ev = espirit_maps(k * mask, return_eigenvalues=True)
    cos = _cos(maps[0], s_true)[support]
    # measured worst case 0.99886 (8 coils, noiseless; with 8 ACS columns 0.991 and 2.5 % of the
    # support cropped at the object edge: fewer calibration patches)
    assert cos.min() > 0.998, cos.min()
    # SENSE self-consistency: sum_c |S_c|^2 = 1 inside the object (unit eigenvectors, no crop)
    ss = maps[0].abs().square().sum(0)[support]
    assert torch.allclose(ss, torch.ones_like(ss), atol=1e-5)
    assert (ev[0, 0][support] > 0.8).all()
    # S S^H x = x for the object: the combined image re-expanded reproduces the coil images
    coil_img = ifft2c(k)[0]
    x = (maps[0].conj() * coil_img).sum(0)
    err = (maps[0] * x - coil_img).abs().square().sum(0)[support].sum()
    assert err / coil_img.abs().square().sum(0)[support].sum() < 1e-3  # measured 1.7e-4


def test_api_method_espirit_and_scale_invariance(one_thread):
    k, _, support = _phantom(6, n=48, seed=2)
    a = estimate_sensitivities(k, num_low_frequencies=10, method="espirit")
    b = estimate_sensitivities(1e-5 * k, num_low_frequencies=10, method="espirit")
    assert a.shape == k.shape and a.dtype == k.dtype
    assert _cos(a[0], b[0])[support].min() > 0.9999


def test_no_calibration_region_is_one_line_error():
    k, _, _ = _phantom(4, n=32)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[::4] = True  # no ACS: centre column 16 sampled but alone
    with pytest.raises(InputError, match="no calibration region"):
        espirit_maps(k * mask)
    assert calibration_region(torch.ones(32, 32, dtype=torch.bool)) == (4, 28, 4, 28)


# ---------------------------------------------------------------------------------------------
# bart ecalib
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bart") is None, reason="bart (Debian package) not installed")
@pytest.mark.parametrize("coils", [4, 8])
def test_agrees_with_bart_ecalib(tmp_path, coils, one_thread):
    k, _, support = _phantom(coils, seed=coils, noise=2e-3)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[::3] = True
    mask[26:38] = True
    ku = (k * mask)[0]  # [C, H, W]
    # BART dims [x y z coils] = [H, W, 1, C]; its centred FFT matches fft2c for even sizes.
    write_cfl(tmp_path / "k", ku.permute(1, 2, 0).numpy()[:, :, None, :])
    subprocess.run(
        # BART's crop default is 0.8, ours 0.6 (kspace_ldm/physics/espirit.py): the same for both
        [
            "bart",
            "ecalib",
            "-m1",
            "-c",
            str(ESPIRIT_DEFAULTS["crop"]),
            *(str(tmp_path / n) for n in "kse"),
        ],
        check=True,
        capture_output=True,
    )
    s_bart = torch.from_numpy(read_cfl(tmp_path / "s").reshape(64, 64, coils)).permute(2, 0, 1)
    ours, ev = espirit_maps(ku[None], return_eigenvalues=True)
    ours = ours[0]
    s_ev = torch.from_numpy(read_cfl(tmp_path / "e").reshape(64, 64)).real
    cos = _cos(ours, s_bart)[support]
    # measured worst case inside the support: 0.9999998 (4 and 8 coils)
    assert cos.min() > 0.99999, cos.min()
    # eigenvalue maps: measured max difference 1.7e-3 (4 coils, at the object edge), 5e-6 (8)
    assert (ev[0, 0] - s_ev).abs().max() < 1e-2
    # same support after the eigenvalue crop: measured identical
    assert torch.equal(ours.abs().sum(0) > 0, s_bart.abs().sum(0) > 0)
    # same phase normalisation (first principal component): the relative phase is one constant
    # (measured spread 2e-7 rad)
    rel = (ours.conj() * s_bart).sum(0)[support]
    assert (rel / rel.abs()).angle().std() < 1e-3
