"""Compressed-sensing baselines (kspace_ldm.sampling.cs): the orthonormal wavelet, FISTA's
objective and fixed point, the closed-form fully sampled case, Chambolle-Pock TV against a
brute-force smoothed-TV minimiser, single- vs multi-coil paths, CS ahead of zero-filled on a
synthetic slice, ``kldm recon --sampler cs-*``, agreement with ``bart pics -l1``, and
``kldm compare`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import run
from helpers import devices

from kspace_ldm.data.masks import create_mask
from kspace_ldm.data.synth import synth_volume
from kspace_ldm.metrics import psnr
from kspace_ldm.ops import fft2c
from kspace_ldm.physics.transforms import center_crop, zero_filled
from kspace_ldm.sampling import cs
from kspace_ldm.sampling.cs import CSOptions, cs_reconstruct

pytest.importorskip("ptwt")


def _slice(shape=(32, 32), recon=24, seed=3):
    vol = synth_volume(seed, shape=shape, recon_size=recon, slices=1)
    k = torch.from_numpy(vol.kspace[:1])[:, None]  # [1, 1, H, W]
    return k, vol.reconstruction_esc[0]


def _mask(shape, accel, cf, seed=0):
    return torch.from_numpy(np.asarray(create_mask("random", [cf], [accel])(shape, seed=seed).mask))


def test_wavelet_is_orthonormal(gen):
    wt = cs._Wavelet("db4", 2)
    z = torch.randn(2, 32, 48, dtype=torch.complex128, generator=gen)
    coeffs = wt.analysis(z)
    energy = sum(c.abs().square().sum() for c in coeffs)
    # measured: relative errors ~1e-15 (float64); the QR boundary filters make W orthogonal
    assert float(energy / z.abs().square().sum()) == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(wt.synthesis(coeffs), z, atol=1e-10)


def test_fista_fully_sampled_is_the_closed_form(gen):
    """With every sample measured A^H A = I, so the minimiser is W^T soft(W x): FISTA must reach
    it (one step does; 5 iterations are checked)."""
    x = torch.randn(1, 32, 32, dtype=torch.complex128, generator=gen)
    k = fft2c(x[:, None])
    op = cs._Forward(k, torch.ones(32, dtype=torch.bool), None, (32, 32))
    wt = cs._Wavelet("db4", 2)
    z = cs.fista_wavelet(op, wt, 0.3, 5, cycle_spin=False)
    assert torch.allclose(z, cs.wavelet_prox(wt, x, 0.3), atol=1e-10)
    # lam = 0: the image itself (with cycle spinning too: every shifted basis is orthonormal)
    assert torch.allclose(cs.fista_wavelet(op, wt, 0.0, 3), x, atol=1e-10)


def test_fista_objective_decreases_and_reaches_a_fixed_point(one_thread):
    k, _ = _slice()
    m = _mask((1, 32, 32), 4, 0.08)
    y = (k * m).to(torch.complex128)
    s = cs._scale(cs._Forward(y, m, None, (32, 32)).adjoint(y))
    op = cs._Forward(y / s, m, None, (32, 32))
    wt = cs._Wavelet("db4", 2)
    hist: list = []
    # the fixed-basis objective (cycle spinning changes the basis at every step)
    z = cs.fista_wavelet(op, wt, 0.02, 1000, history=hist, cycle_spin=False)
    obj = torch.stack(hist)[:, 0]
    start = float(cs.wavelet_objective(op, wt, op.adjoint(op.y), 0.02)[0])
    # FISTA is not monotone step by step; it must end far below the start, at (to 1e-5) the
    # lowest value it visited (measured 1.7e-6 relative), with its last 100 steps settled:
    # no rise above 1e-6 relative (measured 7e-8; early on the ripples are ~5e-4).
    assert float(obj[-1]) < 0.8 * start
    assert float(obj[-1]) <= float(obj.min()) * (1 + 1e-5)
    tail = obj[-100:]
    assert float((tail[1:] - tail[:-1]).max()) < 1e-6 * float(obj[-1])
    # optimality: z is a fixed point of the proximal-gradient map (measured 4.7e-5 relative
    # after 300 iterations, 3.5e-6 after 1000)
    g = z - op.adjoint(op.forward(z) - op.y)
    res = (cs.wavelet_prox(wt, g, 0.02) - z).abs().norm() / z.abs().norm()
    assert float(res) < 1e-5, float(res)


def _brute_force_tv(op, lam, eps=1e-7, steps=400):
    """Minimise 0.5||Ax - y||^2 + lam sum sqrt(|grad x|^2 + eps^2) by L-BFGS (smooth, so a
    different algorithm with no duality); within lam * eps * N of the TV objective."""
    x0 = op.adjoint(op.y)
    v = torch.view_as_real(x0).clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v],
        max_iter=steps,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        x = torch.view_as_complex(v)
        g = cs.grad2(x)
        f = op.data_term(x).sum() + lam * (g.abs().square().sum(1) + eps**2).sqrt().sum()
        f.backward()
        return f

    opt.step(closure)
    return torch.view_as_complex(v.detach())


@pytest.mark.parametrize("coils", [1, 2])
def test_tv_matches_brute_force(gen, coils, one_thread):
    H = W = 12
    x = torch.randn(1, H, W, dtype=torch.complex128, generator=gen)
    m = (torch.rand(W, generator=gen) < 0.5) | (torch.arange(W) == W // 2)
    if coils == 1:
        maps = None
        k = fft2c(x[:, None]) * m
    else:
        maps = torch.randn(1, coils, H, W, dtype=torch.complex128, generator=gen)
        maps = maps / maps.abs().square().sum(1, keepdim=True).sqrt()
        k = fft2c(maps * x[:, None]) * m
    op = cs._Forward(k, m, maps, (H, W))
    lam = 0.1
    f_1k = float(cs.tv_objective(op, cs.chambolle_pock_tv(op, lam, 1000), lam))
    f_2k = float(cs.tv_objective(op, cs.chambolle_pock_tv(op, lam, 2000), lam))
    f_ref = float(cs.tv_objective(op, _brute_force_tv(op, lam), lam))
    # converged: measured |f_1k - f_2k| ~ 4e-9 relative (1 coil), < 1e-15 (2 coils)
    assert abs(f_1k - f_2k) < 1e-7 * f_2k
    # and at least as low as the smoothed L-BFGS minimiser, which stops above the minimum in
    # this nearly flat problem (measured: CP lower by 8e-5 (1 coil) and 2e-5 (2 coils)
    # relative; the images differ by up to 0.04 along the flat directions, so they are not
    # compared)
    assert f_2k <= f_ref


def test_single_and_multicoil_paths_agree(one_thread):
    """One coil of ones through the SENSE path (K = (A, grad)) solves the same problem as the
    single-coil path (exact data prox)."""
    k, _ = _slice()
    m = _mask((1, 32, 32), 4, 0.08)
    y = (k * m).to(torch.complex128)
    ones = torch.ones(1, 1, 32, 32, dtype=torch.complex128)
    a = cs_reconstruct("cs-tv", y, m, CSOptions(iterations=500))
    b = cs_reconstruct("cs-tv", y, m, CSOptions(iterations=500), maps=ones)
    # measured: max |a - b| / max |a| = 2.7e-4 at 500 iterations (one minimiser, two algorithms)
    assert float((a - b).abs().max() / a.abs().max()) < 2e-3
    c = cs_reconstruct("cs-wavelet", y, m, CSOptions(iterations=50))
    d = cs_reconstruct("cs-wavelet", y, m, CSOptions(iterations=50), maps=ones)
    assert torch.allclose(c, d, atol=1e-6 * float(c.abs().max()))


@pytest.mark.parametrize("device", devices())
def test_cs_beats_zero_filled_at_4x(device, one_thread):
    k, target = _slice(shape=(96, 96), recon=48, seed=11)
    m = _mask((1, 96, 96), 4, 0.08, seed=5)
    y = (k * m).to(device)
    zf = zero_filled(y[:, 0], crop=(48, 48)).cpu().numpy()  # [1, 48, 48]
    p_zf = psnr(target[None], zf)
    for method in cs.CS_SAMPLERS:
        x = cs_reconstruct(method, y, m.to(device))
        rec = center_crop(x.abs(), (48, 48)).cpu().numpy()
        # measured on this slice (seed 11, 4x, cf 0.08) on the CPU: zero-filled 23.80 dB,
        # cs-wavelet 26.42 (+2.6), cs-tv 26.80 (+3.0); required: +1.5 dB
        assert psnr(target[None], rec) > p_zf + 1.5, method


def test_recon_cli_cs_and_backend_error(tmp_path):
    run(
        "data",
        "synth",
        tmp_path / "d",
        "--test",
        1,
        "--shape",
        "48x40",
        "--recon-size",
        32,
        "--slices",
        2,
    )
    data = tmp_path / "d" / "singlecoil_test"
    for method in cs.CS_SAMPLERS:
        res = run("recon", data, "--out", tmp_path / method, "--sampler", method, "--cs-iters", 5)
        assert "s/slice" in res.output
        assert len(list((tmp_path / method).glob("*.h5"))) == 1
    res = run(
        "recon", data, "--out", tmp_path / "x", "--sampler", "cs-tv", "--backend", "cpp", ok=False
    )
    assert res.exit_code == 2 and "python backend only" in res.output
    assert "Traceback" not in res.output


def test_multicoil_recon_runs(tmp_path):
    run(
        "data",
        "synth",
        tmp_path / "d",
        "--test",
        1,
        "--coils",
        4,
        "--shape",
        "48x40",
        "--recon-size",
        32,
        "--slices",
        1,
    )
    data = tmp_path / "d" / "multicoil_test"
    run("recon", data, "--out", tmp_path / "r", "--sampler", "cs-wavelet", "--cs-iters", 20)
    res = run("evaluate", "--pred", tmp_path / "r", "--target", data)
    assert "PSNR" in res.output


def test_agrees_with_bart_pics(tmp_path):
    """One 96x96 slice at 4x: our FISTA L1-wavelet against ``bart pics -l1`` (same wavelet, data
    scaling via -w, lam and iterations; both with random cycle spinning)."""
    from kspace_ldm.bench.bart import bart_available, bart_pics

    if not bart_available():
        pytest.skip("bart is not installed (Debian package bart)")
    k, target = _slice(shape=(96, 96), recon=48, seed=11)
    m = _mask((1, 96, 96), 4, 0.08, seed=5)
    y = k * m
    d = cs.CS_DEFAULTS["cs-wavelet"]
    ours = center_crop(cs_reconstruct("cs-wavelet", y, m).abs(), (48, 48)).numpy()
    scale = float(cs._scale(cs._Forward(y, m, None, (96, 96)).adjoint(y))[0])
    img, _ = bart_pics(y[0].numpy(), None, d["lam"], d["iterations"], scale, d["wavelet"])
    theirs = center_crop(torch.from_numpy(np.abs(img))[None], (48, 48)).numpy()
    p_ours, p_bart = psnr(target[None], ours), psnr(target[None], theirs)
    # measured on this slice: ours 26.42 dB, bart 26.74 dB (difference 0.32 dB; over the demo test
    # split the mean differences are 0.13 dB at 4x and 0.43 dB at 8x, docs/benchmarks.md); the
    # issue asks for agreement within 0.5 dB
    assert abs(p_ours - p_bart) < 0.5, (p_ours, p_bart)


def test_compare_end_to_end(tmp_path):
    run(
        "data",
        "synth",
        tmp_path / "d",
        "--test",
        2,
        "--shape",
        "96x96",
        "--recon-size",
        48,
        "--slices",
        1,
    )
    data = tmp_path / "d" / "singlecoil_test"
    out = tmp_path / "cmp"
    res = run(
        "compare",
        data,
        "--out",
        out,
        "--methods",
        "zero-filled,cs-wavelet,cs-tv,cgs",
        "--accel",
        "4,8",
    )
    assert "| cs-wavelet | 4x |" in res.output and "| cgs | 8x |" in res.output
    doc = json.loads((out / "compare.json").read_text())
    assert set(doc["summary"]) == {"zero-filled", "cs-wavelet", "cs-tv", "cgs"}
    for m in doc["summary"].values():
        assert set(m) >= {"4x", "8x"} and m["4x"]["volumes"] == 2
        assert m["4x"]["seconds_per_slice"] > 0
    assert (
        doc["summary"]["cs-wavelet"]["4x"]["psnr"]["mean"]
        > (doc["summary"]["zero-filled"]["4x"]["psnr"]["mean"])
    )
    lines = (out / "per_volume.csv").read_text().splitlines()
    assert lines[0] == "method,acceleration,file,nmse,psnr,ssim" and len(lines) == 1 + 4 * 2 * 2
    assert (out / "panel.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cgs | 4x |" in (out / "compare.md").read_text()


@pytest.mark.parametrize(
    ("methods", "extra", "needle"),
    [
        ("zero-filled,fancy", (), "unknown method 'fancy'"),
        ("zero-filled,unet", (), "unet"),
    ],
)
def test_compare_refuses_unavailable_methods(tmp_path, methods, extra, needle):
    run(
        "data",
        "synth",
        tmp_path / "d",
        "--test",
        1,
        "--shape",
        "48x40",
        "--recon-size",
        32,
        "--slices",
        1,
    )
    res = run(
        "compare",
        tmp_path / "d" / "singlecoil_test",
        "--out",
        tmp_path / "o",
        "--methods",
        methods,
        *extra,
        ok=False,
    )
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_multicoil_cs_beats_zero_filled(one_thread):
    """4 coils, ESPIRiT maps from the calibration lines (those of cgs), multi-coil default
    weights."""
    vol = synth_volume(21, coils=4, shape=(96, 96), recon_size=48, slices=1)
    k = torch.from_numpy(vol.kspace)  # [1, 4, 96, 96]
    m = _mask((1, 4, 96, 96), 4, 0.08, seed=2)
    y = k * m
    target = vol.reconstruction_rss
    p_zf = psnr(target, zero_filled(y, crop=(48, 48), coil_dim=1).numpy())
    for method in cs.CS_SAMPLERS:
        rec = center_crop(cs_reconstruct(method, y, m).abs(), (48, 48)).numpy()
        # measured with ESPIRiT maps: zero-filled RSS 19.58 dB, cs-wavelet 25.10, cs-tv 24.88
        # (with the earlier low-resolution maps 24.02 / 24.49); required: +3 dB
        assert psnr(target, rec) > p_zf + 3.0, method
