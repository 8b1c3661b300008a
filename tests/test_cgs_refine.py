"""The cgs + L1-wavelet hybrid (kspace_ldm.sampling.cgs_refine)."""

from __future__ import annotations

import pytest
import torch

from kspace_ldm.errors import InputError
from kspace_ldm.ops import fft2c
from kspace_ldm.sampling import cgs_refine as cr
from kspace_ldm.sampling.cs import _Wavelet, wavelet_prox


def _problem(seed=0, h=32, w=20):  # W = 20: the padded grid (24) is exercised
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(2, h, w, dtype=torch.complex64)
    img[:, 8:20, 6:18] = 1.0
    img = img + 0.05 * torch.randn(2, h, w, generator=g, dtype=torch.complex64)
    k = fft2c(img[:, None])
    mask = torch.rand(w, generator=g) < 0.35
    mask[w // 2 - 2 : w // 2 + 2] = True
    masked = k * mask
    k_cgs = k + 0.1 * torch.randn(k.shape, generator=g, dtype=torch.complex64)
    return k_cgs, masked, mask


def _multicoil(seed=0, coils=4, h=32, w=20):
    """:func:`_problem`'s kind of image seen by ``coils`` smooth coils with
    ``sum_c |S_c|^2 = 1``: (cgs coil k-space, measured coil k-space ``[2, C, H, W]``, mask
    ``[W]``, maps ``[1, C, H, W]``)."""
    from kspace_ldm.ops import sense_forward

    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(2, 1, h, w, dtype=torch.complex64)
    img[..., 8:20, 6:18] = 1.0
    img = img + 0.05 * torch.randn(img.shape, generator=g, dtype=torch.complex64)
    yy = torch.linspace(-1, 1, h)[:, None]
    xx = torch.linspace(-1, 1, w)[None, :]
    maps = torch.stack([
        torch.exp(-((yy - float(cy)) ** 2 + (xx - float(cx)) ** 2) + 1j * float(ph) * xx)
        for cy, cx, ph in torch.rand(coils, 3, generator=g) * 2 - 1
    ])[None].to(torch.complex64)  # fmt: skip
    maps = maps / maps.abs().square().sum(1, keepdim=True).sqrt()
    coil_k = sense_forward(img, maps)  # [2, C, H, W]
    coil_cgs = coil_k + 0.1 * torch.randn(coil_k.shape, generator=g, dtype=torch.complex64)
    mask = torch.rand(w, generator=g) < 0.35
    mask[w // 2 - 2 : w // 2 + 2] = True
    return coil_cgs, coil_k * mask, mask, maps


def _sampler_data():
    """(measured k-space ``[2, 1, 16, 20]``, mask ``[20]``) for the tiny sampler's tests."""
    g = torch.Generator().manual_seed(3)
    k = torch.randn(2, 1, 16, 20, generator=g, dtype=torch.complex64)
    mask = torch.zeros(20, dtype=torch.bool)
    mask[::3] = True
    mask[8:12] = True
    return k * mask, mask


def test_haar_prox_matches_ptwt_haar():
    """The strided haar prox equals the cs-wavelet baseline's (ptwt, QR boundary filters):
    the two transforms differ only in band signs/order, which soft-thresholding does not see.
    Tolerance 1e-5 (float32; measured worst case 6e-7)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 32, 48, generator=g, dtype=torch.complex64)
    for levels in (1, 3, 4):
        ours = cr.haar_prox(z, 0.3, levels)
        ref = wavelet_prox(_Wavelet.get("haar", levels), z, 0.3)
        assert (ours - ref).abs().max() < 1e-5
    # orthonormal: t = 0 is the identity, and the detail energy plus the approximation's is kept
    assert (cr.haar_prox(z, 0.0, 4) - z).abs().max() < 1e-5


def test_measured_samples_exact_and_objective_decreases():
    k_cgs, masked, mask = _problem()
    hist: list = []
    out = cr.cs_refine(k_cgs, masked, mask, 0.01, 0.1, 40, cycle_spin=False, history=hist)
    assert torch.equal(out[..., mask], masked[..., mask])  # hard DC: bit for bit
    obj = torch.stack(hist)  # [iterations, B]
    # FISTA is not monotone step by step; the objective must fall overall and settle
    assert (obj[-1] < obj[0]).all()
    assert (obj[-1] <= obj[10:].min(dim=0).values * (1 + 1e-4)).all()
    # the result changes the unmeasured samples (it is not a no-op)
    assert (out[..., ~mask] - k_cgs[..., ~mask]).abs().max() > 1e-3


def test_limits_of_the_weights():
    k_cgs, masked, mask = _problem(2)
    # mu -> inf: the cgs estimate itself (after hard DC)
    out = cr.cs_refine(k_cgs, masked, mask, 0.01, 1e6, 20)
    expect = torch.where(mask, masked, k_cgs)
    assert (out - expect).abs().max() / expect.abs().max() < 1e-4
    # lam = mu = 0 and no DC: least squares started from cgs keeps the unmeasured samples of cgs
    out = cr.cs_refine(k_cgs, masked, mask, 0.0, 0.0, 5, dc=False)
    assert (out[..., ~mask] - k_cgs[..., ~mask]).abs().max() / k_cgs.abs().max() < 1e-4
    assert (out[..., mask] - masked[..., mask]).abs().max() / masked.abs().max() < 1e-4


def test_bad_input_is_one_line():
    k_cgs, masked, mask = _problem()
    with pytest.raises(InputError, match="needs SENSE maps"):
        cr.cs_refine(k_cgs.repeat(1, 2, 1, 1), masked.repeat(1, 2, 1, 1), mask, 0.01, 0.1, 3)
    k_mc, masked_mc, mask, maps = _multicoil()
    with pytest.raises(InputError, match="3 coil maps for k-space with 4 coils"):
        cr.cs_refine(k_mc, masked_mc, mask, 0.01, 0.1, 3, maps=maps[:, :3])
    with pytest.raises(InputError, match=">= 0"):
        cr.cs_refine(k_cgs, masked, mask, -1.0, 0.1, 3)


def test_sampler_refine_option_exact_on_measured_samples(gen):
    from tiny_models import tiny_sampler

    from kspace_ldm.sampling.cgs import SamplerOptions

    sampler = tiny_sampler()
    masked, mask = _sampler_data()
    plain = sampler.sample(masked, mask, SamplerOptions(steps=2, t0=50), gen)
    opts = SamplerOptions(steps=2, t0=50, refine="cs-wavelet", refine_iterations=10)
    hybrid = sampler.sample(masked, mask, opts, torch.Generator().manual_seed(0))
    assert torch.equal(hybrid[..., mask], masked[..., mask])
    assert (hybrid[..., ~mask] - plain[..., ~mask]).abs().max() > 1e-4
    with pytest.raises(InputError, match="unknown refinement"):
        sampler.sample(masked, mask, SamplerOptions(steps=1, t0=5, refine="tv"), gen)


def test_cgs_cs_refused_by_the_cpp_backend(tmp_path):
    from cli_runner import run

    run("data", "synth", tmp_path / "d", "--test", 1, "--shape", "48x40", "--recon-size", 32,
        "--slices", 1)  # fmt: skip
    data = tmp_path / "d" / "singlecoil_test"
    model = tmp_path / "export"
    model.mkdir()
    res = run("recon", data, "--out", tmp_path / "x", "--sampler", "cgs-cs", "--model", model,
              "--backend", "cpp", ok=False)  # fmt: skip
    assert res.exit_code == 2 and "python backend only" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_mu_zero_from_zero_filled_is_the_cs_wavelet_baseline():
    """With mu = 0 and the zero-filled start (the default start) the refinement runs the
    cs-wavelet baseline's iterates (same scaling, same cycle-spin shifts); only the haar
    implementation differs. Tolerance 1e-4 relative (measured worst case 2.2e-6 over 4 seeds)."""
    from kspace_ldm.ops import ifft2c
    from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct

    k_cgs, masked, mask = _problem(4, h=32, w=32)
    ours = cr.cs_refine(k_cgs, masked, mask, 0.01, 0.0, 30, dc=False, start="zero-filled")
    ref = cs_reconstruct("cs-wavelet", masked, mask, CSOptions(lam=0.01, iterations=30))
    err = (ifft2c(ours)[:, 0] - ref).abs().max() / ref.abs().max()
    assert err < 1e-4


def test_multicoil_mu_zero_is_the_multicoil_cs_wavelet_baseline():
    """With SENSE maps, mu = 0 and the zero-filled start, the refinement runs the multi-coil
    cs-wavelet baseline's iterates on the same maps. Tolerance 1e-4 relative (measured worst
    case 1.5e-6 over seeds 0-3)."""
    from kspace_ldm.ops import sense_adjoint
    from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct

    for seed in range(2):
        k_cgs, masked, mask, maps = _multicoil(seed)
        ours = cr.cs_refine(k_cgs, masked, mask, 0.01, 0.0, 30, dc=False, start="zero-filled",
                            maps=maps)  # fmt: skip
        ref = cs_reconstruct("cs-wavelet", masked, mask, CSOptions(lam=0.01, iterations=30),
                             maps=maps)  # fmt: skip
        image = sense_adjoint(ours, maps)[:, 0]  # S^H F^-1 F S x = x (sum_c |S_c|^2 = 1)
        err = float((image - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, err


def test_multicoil_exact_per_coil_and_objective_decreases():
    k_cgs, masked, mask, maps = _multicoil(1)
    hist: list = []
    out = cr.cs_refine(k_cgs, masked, mask, 0.01, 0.1, 40, cycle_spin=False, history=hist,
                       maps=maps)  # fmt: skip
    assert out.shape == masked.shape
    assert torch.equal(out[..., mask], masked[..., mask])  # every coil's measured samples
    obj = torch.stack(hist)
    assert (obj[-1] < obj[0]).all()
    # mu -> inf: the cgs estimate's combined image, re-expanded to the coils, then hard DC
    from kspace_ldm.ops import ifft2c, sense_adjoint, sense_forward

    out = cr.cs_refine(k_cgs, masked, mask, 0.01, 1e6, 20, maps=maps)
    x_c = sense_adjoint(k_cgs, maps)  # [2, 1, H, W]
    expect = torch.where(mask, masked, sense_forward(x_c, maps))
    assert (out - expect).abs().max() / expect.abs().max() < 1e-4
    assert ifft2c(out).isfinite().all()


def test_coil_agnostic_sampler_refine(gen):
    """cgs-cs on the coil-agnostic path: a single-coil model on 4-coil data with maps."""
    from tiny_models import tiny_sampler

    from kspace_ldm.sampling.cgs import SamplerOptions

    sampler = tiny_sampler()
    _, masked, mask, maps = _multicoil(2, h=16, w=20)
    plain = sampler.sample(masked, mask, SamplerOptions(steps=2, t0=50), gen, maps=maps)
    opts = SamplerOptions(steps=2, t0=50, refine="cs-wavelet", refine_iterations=10)
    hybrid = sampler.sample(masked, mask, opts, torch.Generator().manual_seed(0), maps=maps)
    assert hybrid.shape == masked.shape
    assert torch.equal(hybrid[..., mask], masked[..., mask])
    assert (hybrid[..., ~mask] - plain[..., ~mask]).abs().max() > 1e-4
    assert cr.resolve_refine(opts, coils=4)["lam"] == cr.REFINE_DEFAULTS_MULTICOIL["lam"]
