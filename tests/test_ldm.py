"""Second stage and samplers: latent statistics, test-time normalisation, cgs / cgs-ref properties
(determinism, exact measured lines, odd widths, multi-coil shapes) and the CLI chain
synth -> train ae -> extract-latents -> train ldm -> recon -> evaluate on tiny models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run
from tiny_models import tiny_sampler

from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction
from kspace_ldm.data.masks import create_mask
from kspace_ldm.errors import InputError
from kspace_ldm.latents import acs_rms, estimate_norm_stats, normalize_with
from kspace_ldm.models import KspaceNormalizer, NormStats
from kspace_ldm.physics.fft import fft2c
from kspace_ldm.physics.transforms import kspace_to_image
from kspace_ldm.sampling.cgs import SamplerOptions

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def phantom_kspace(batch: int, coils: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    disc = ((yy / 0.7) ** 2 + (xx / 0.5) ** 2 < 1).float()
    img = disc[None, None] * (1 + 0.1 * torch.randn(batch, coils, h, w, generator=g))
    phase = torch.exp(1j * 0.3 * torch.randn(batch, coils, 1, 1, generator=g))
    return fft2c(img.to(torch.complex64) * phase)


def column_mask(w: int, accel: int = 4, cf: float = 0.08, seed: int = 1) -> torch.Tensor:
    res = create_mask("random", [cf], [accel])((1, w), seed=seed)
    return torch.as_tensor(res.mask).bool()


# ---------------------------------------------------------------------------------------------
def test_acs_rms_is_available_from_undersampled_data():
    k = phantom_kspace(2, 1, 32, 48)
    norm = KspaceNormalizer("standardize")
    m = column_mask(48)
    full = acs_rms(k, norm)
    under = acs_rms(k * m, norm, m)
    assert torch.allclose(full, under, rtol=1e-6)
    # ... while the statistics the reference took from the zero-filled k-space are biased
    _, zf_stats = norm.normalize(k * m)
    _, full_stats = norm.normalize(k)
    assert (zf_stats.scale < 0.99 * full_stats.scale).all()


def test_estimate_norm_stats_uses_ratios_not_masked_statistics():
    k = phantom_kspace(2, 1, 32, 48)
    norm = KspaceNormalizer("standardize")
    m = column_mask(48).reshape(1, 1, 1, -1)
    est = estimate_norm_stats(k * m, m, norm, {"scale": [2.0, 3.0], "shift": [0.5, -0.5]})
    a = acs_rms(k, norm)[:, None, None, None]
    assert torch.allclose(est.scale[:, 0:1], 2 * a) and torch.allclose(est.scale[:, 1:2], 3 * a)
    assert torch.allclose(est.shift[:, 1:2], -0.5 * a)
    with pytest.raises(InputError, match="calibration"):
        estimate_norm_stats(k * 0, torch.zeros(48, dtype=torch.bool), norm, {"scale": [1, 1]})


def test_refit_stats_recovers_the_full_kspace_statistics():
    """A decoded estimate equal to the truth, with a wrong prior: the least-squares fit on the
    measured samples must return the true full-k-space statistics."""
    sampler = tiny_sampler()
    k = phantom_kspace(2, 1, 32, 48)
    x_true, stats = sampler.norm.normalize(k)
    m = column_mask(48).reshape(1, 1, 1, -1)
    prior = NormStats(stats.shift * 0.3, stats.scale * 1.6)
    fit = sampler.refit_stats(x_true, k * m, m, prior)
    assert torch.allclose(fit.scale, stats.scale, rtol=1e-3)
    assert torch.allclose(fit.shift, stats.shift, atol=1e-3 * float(stats.scale.max()))
    assert torch.allclose(normalize_with(sampler.norm, k, fit), x_true, atol=1e-3)


@pytest.mark.parametrize("name", ["cgs", "cgs-ref"])
def test_sampler_is_deterministic_under_a_seed(name):
    sampler = tiny_sampler()
    k = phantom_kspace(1, 1, 16, 24)
    m = column_mask(24)
    y = k * m
    opts = SamplerOptions(steps=3, t0=30, eta=0.5) if name == "cgs" else SamplerOptions(t0=22)
    opts = replace(opts, sampler=name)

    def go(seed):
        return sampler.sample(y, m, replace(opts, seed=seed))

    a, b, c = go(7), go(7), go(8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_cgs_measured_lines_are_exact_and_cgs_ref_are_not():
    sampler = tiny_sampler()
    k = phantom_kspace(2, 1, 16, 24)
    m = column_mask(24)
    y = k * m
    out = sampler.cgs(y, m, SamplerOptions(steps=3, t0=50), torch.Generator().manual_seed(0))
    assert out.shape == y.shape and out.dtype == y.dtype
    assert torch.equal(out[..., m], y[..., m])  # bit for bit
    assert not torch.allclose(out[..., ~m], torch.zeros_like(out[..., ~m]))
    ref = sampler.cgs_ref(y, m, SamplerOptions(t0=5), torch.Generator().manual_seed(0))
    assert not torch.equal(ref[..., m], y[..., m])  # the reference has no final DC
    # the posterior-mean average of several samples keeps the measurements exact too
    opts = SamplerOptions(steps=2, t0=300, samples=3)
    avg = sampler.sample(y, m, opts)
    one = sampler.sample(y, m, SamplerOptions(steps=2, t0=300))
    assert torch.equal(avg[..., m], y[..., m]) and not torch.allclose(avg, one)


@pytest.mark.parametrize("width", [368, 372, 37])
def test_odd_widths_keep_shape_and_measurements(width):
    sampler = tiny_sampler()
    k = phantom_kspace(1, 1, 12, width)
    m = column_mask(width, seed=width)
    y = k * m
    g = torch.Generator().manual_seed(0)
    out = sampler.cgs(y, m, SamplerOptions(steps=2, t0=40), g)
    assert out.shape == (1, 1, 12, width)
    assert torch.isfinite(out.real).all() and torch.equal(out[..., m], y[..., m])
    ref = sampler.cgs_ref(y, m, SamplerOptions(t0=3), g)
    assert ref.shape == (1, 1, 12, width) and torch.isfinite(ref.real).all()


def test_cgs_ref_runs_its_consistency_and_guidance_branches():
    """t0 = 101: one replacement DC (t = 100) and 60 guided steps (t = 80..21), as the reference."""
    sampler = tiny_sampler()
    k = phantom_kspace(1, 1, 8, 12)
    m = column_mask(12)
    calls = {"decode": 0}
    decode = sampler.decode

    def counting(z, pad):
        calls["decode"] += 1
        return decode(z, pad)

    sampler.decode = counting
    out = sampler.cgs_ref(k * m, m, SamplerOptions(t0=101), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.real).all()
    # hard DC at t = 100 (1) + guidance at t = 80..21 (60) + the final decode (1)
    assert calls["decode"] == 62


def test_multicoil_shapes():
    sampler = tiny_sampler(coils=4)
    k = phantom_kspace(2, 4, 16, 20)
    m = column_mask(20)
    y = k * m
    out = sampler.cgs(y, m, SamplerOptions(steps=2, t0=20), torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 16, 20) and torch.equal(out[..., m], y[..., m])
    img = kspace_to_image(out, crop=(8, 8), coil_dim=1)
    assert img.shape == (2, 8, 8)
    with pytest.raises(InputError, match="coil"):
        tiny_sampler(coils=1).cgs(y, m)


def test_guidance_reduces_the_measured_residual():
    sampler = tiny_sampler()
    k = phantom_kspace(1, 1, 16, 24)
    m = column_mask(24).reshape(1, 1, 1, -1)
    y = k * m
    stats = estimate_norm_stats(y, m, sampler.norm, sampler.ldm.norm_ratio)
    z, pad = sampler.encode(normalize_with(sampler.norm, y, stats))
    x0 = sampler.ldm.scale_factor * z

    def residual(x):
        kk = sampler.norm.denormalize(sampler.decode(x / sampler.ldm.scale_factor, pad), stats)
        return float(((kk - y) * m).abs().square().sum())

    guided = sampler._guide(x0, y, m, stats, pad, 0.05)
    assert residual(guided) < residual(x0)


# ---------------------------------------------------------------------------------------------
def test_cli_chain_synth_ae_extract_ldm_recon_evaluate(tmp_path):
    data = tmp_path / "data"
    run("data", "synth", data, "--train", 3, "--val", 1, "--test", 1, "--shape", "32x36",
        "--recon-size", 24, "--slices", 2, "--seed", 2)  # fmt: skip
    ae = tmp_path / "ae"
    run("train", "--stage", "ae", "--config", CONFIGS / "tiny_ae_kl.yaml", "--out", ae,
        "--set", f"data.train={data / 'singlecoil_train'}",
        "--set", f"data.val={data / 'singlecoil_val'}", "--set", "train.max_steps=4",
        "--set", "train.val_every=4", "--set", "train.ckpt_every=4")  # fmt: skip
    lat = tmp_path / "latents"
    for part in ("train", "val"):
        res = run("extract-latents", "--ckpt", ae / "best", "--data",
                  data / f"singlecoil_{part}", "--out", lat, "--partition", part)  # fmt: skip
        assert "written" in res.output
    again = run("extract-latents", "--ckpt", ae / "best", "--data", data / "singlecoil_train",
                "--out", lat, "--partition", "train")  # fmt: skip
    assert "0 written, 3 already present" in again.output  # resumable: complete shards kept
    stats = json.loads((lat / "stats.json").read_text())
    assert stats["latent"]["slices"] == 6 and len(stats["norm_ratio"]["scale"]) == 2

    ldm = tmp_path / "ldm"
    res = run("train", "--stage", "ldm", "--config", CONFIGS / "tiny_ldm.yaml", "--out", ldm,
              "--set", f"data.train={lat / 'train'}",
              "--set", f"data.val={lat / 'val'}")  # fmt: skip
    assert "ema_loss" in res.output
    meta = json.loads((ldm / "best" / "ldm.json").read_text())
    assert meta["scale_factor"] == pytest.approx(1 / stats["latent"]["global_std"])
    assert (ldm / "best" / "ema.safetensors").is_file()
    # a config/stage mismatch is one line, not a traceback
    bad = run("train", "--stage", "ae", "--config", CONFIGS / "tiny_ldm.yaml", "--out",
              tmp_path / "x", ok=False)  # fmt: skip
    assert bad.exit_code == 2 and "stage" in bad.output

    test_dir = data / "singlecoil_test"
    outs = {}
    for sampler, extra in (
        ("zero-filled", []),
        ("cgs", ["--model", ldm, "--steps", 2, "--t0", 50]),
        ("cgs-ref", ["--model", ldm, "--t0", 4]),
    ):
        outs[sampler] = tmp_path / sampler
        run("recon", test_dir, "--out", outs[sampler], "--sampler", sampler, "--accel", 4,
            "--center-fraction", 0.08, "--batch-size", 2, *extra)  # fmt: skip
    f = next(test_dir.glob("*.h5"))
    recs = {s: read_reconstruction(p / f.name) for s, p in outs.items()}
    assert all(r.shape == (2, 24, 24) for r in recs.values())
    assert not np.allclose(recs["cgs"], recs["zero-filled"])
    # same seed -> the same reconstruction
    run("recon", test_dir, "--out", tmp_path / "cgs2", "--sampler", "cgs", "--model", ldm,
        "--steps", 2, "--t0", 50, "--batch-size", 2)  # fmt: skip
    assert np.array_equal(read_reconstruction(tmp_path / "cgs2" / f.name), recs["cgs"])
    res = run(
        "evaluate", "--pred", outs["cgs"], "--target", test_dir, "--json", tmp_path / "m.json"
    )
    assert json.loads((tmp_path / "m.json").read_text())
    with FastMRIFile(f) as fh:
        assert fh.num_slices == 2
    missing = run("recon", test_dir, "--out", tmp_path / "y", "--sampler", "cgs", ok=False)
    assert missing.exit_code == 2 and "--model" in missing.output

    # deployment: kldm export (without the guidance VJP) -> kldm recon --backend cpp gives the
    # Python backend's reconstruction; cgs-ref needs the VJP and is refused in one line
    exp = tmp_path / "export"
    res = run("export", ldm, "--out", exp, "--no-guidance")
    assert "1x32x36 k-space" in res.output
    assert not (exp / "decoder_vjp.pt2").exists()
    run("recon", test_dir, "--out", tmp_path / "cpp", "--model", exp, "--backend", "cpp",
        "--steps", 2, "--t0", 50, "--batch-size", 2, "--accel", 4,
        "--center-fraction", 0.08)  # fmt: skip
    cpp = read_reconstruction(tmp_path / "cpp" / f.name)
    assert np.linalg.norm(cpp - recs["cgs"]) / np.linalg.norm(recs["cgs"]) < 1e-4
    ref = run("recon", test_dir, "--out", tmp_path / "z", "--model", exp, "--backend", "cpp",
              "--sampler", "cgs-ref", ok=False)  # fmt: skip
    assert ref.exit_code == 2 and "decoder_vjp" in ref.output and "Traceback" not in ref.output
    bad_size = run("recon", test_dir, "--out", tmp_path / "z", "--model", ldm, "--backend", "cpp",
                   ok=False)  # fmt: skip
    assert bad_size.exit_code == 2 and "not an export directory" in bad_size.output


def test_cli_chain_multicoil(tmp_path):
    """The same chain on multi-coil data (docs/results.md, "Multi-coil"): the first stage takes
    2C channels from the data, the normalisation ratios have 2C entries, the samplers return
    C-coil k-space, and the evaluation scores the RSS images against reconstruction_rss."""
    data = tmp_path / "data"
    run("data", "synth", data, "--coils", 2, "--train", 3, "--val", 1, "--test", 1,
        "--shape", "32x36", "--recon-size", 24, "--slices", 2, "--seed", 3)  # fmt: skip
    ae = tmp_path / "ae"
    run("train", "--stage", "ae", "--config", CONFIGS / "tiny_ae_kl.yaml", "--out", ae,
        "--set", f"data.train={data / 'multicoil_train'}",
        "--set", f"data.val={data / 'multicoil_val'}", "--set", "train.max_steps=4",
        "--set", "train.val_every=4", "--set", "train.ckpt_every=4")  # fmt: skip
    assert "in_channels: 4" in (ae / "config.yaml").read_text()
    lat = tmp_path / "latents"
    for part in ("train", "val"):
        run("extract-latents", "--ckpt", ae / "best", "--data", data / f"multicoil_{part}",
            "--out", lat, "--partition", part)  # fmt: skip
    stats = json.loads((lat / "stats.json").read_text())
    assert stats["latent"]["slices"] == 6 and len(stats["norm_ratio"]["scale"]) == 4
    ldm = tmp_path / "ldm"
    run("train", "--stage", "ldm", "--config", CONFIGS / "tiny_ldm.yaml", "--out", ldm,
        "--set", f"data.train={lat / 'train'}", "--set", f"data.val={lat / 'val'}")  # fmt: skip

    test_dir = data / "multicoil_test"
    f = next(test_dir.glob("*.h5"))
    recs = {}
    for sampler, extra in (
        ("zero-filled", []),
        ("cgs", ["--model", ldm, "--steps", 2, "--t0", 50]),
        ("cgs-ref", ["--model", ldm, "--t0", 4]),
    ):
        out = tmp_path / sampler
        run("recon", test_dir, "--out", out, "--sampler", sampler, "--accel", 4,
            "--center-fraction", 0.08, "--batch-size", 2, *extra)  # fmt: skip
        recs[sampler] = read_reconstruction(out / f.name)
        js = tmp_path / f"{sampler}.json"
        run("evaluate", "--pred", out, "--target", test_dir, "--json", js)
        m = json.loads(js.read_text())
        assert m["challenge"] == "multicoil" and m["target_key"] == "reconstruction_rss"
        assert np.isfinite(m["summary"]["psnr"]["mean"])
    assert all(r.shape == (2, 24, 24) for r in recs.values())
    assert not np.allclose(recs["cgs"], recs["zero-filled"])
    # a single-coil first stage refuses multi-coil data in one line
    single = tmp_path / "single"
    run("data", "synth", single, "--train", 2, "--val", 1, "--shape", "32x36",
        "--recon-size", 24, "--slices", 2, "--seed", 4)  # fmt: skip
    ae1 = tmp_path / "ae1"
    run("train", "--stage", "ae", "--config", CONFIGS / "tiny_ae_kl.yaml", "--out", ae1,
        "--set", f"data.train={single / 'singlecoil_train'}",
        "--set", f"data.val={single / 'singlecoil_val'}", "--set", "train.max_steps=2",
        "--set", "train.val_every=2", "--set", "train.ckpt_every=2")  # fmt: skip
    bad = run("extract-latents", "--ckpt", ae1 / "best", "--data", test_dir, "--out",
              tmp_path / "lat1", "--partition", "test", ok=False)  # fmt: skip
    assert bad.exit_code == 2 and "coil" in bad.output and "Traceback" not in bad.output


def test_torchrun_ranks_share_out_the_files(monkeypatch):
    from kspace_ldm.recon import shard_for_rank

    files = [Path(f"f{i}.h5") for i in range(5)]
    assert shard_for_rank(files) == files
    monkeypatch.setenv("WORLD_SIZE", "2")
    parts = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        parts.append(shard_for_rank(files))
    assert parts[0] == files[0::2] and parts[1] == files[1::2]
