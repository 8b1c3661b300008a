"""cgs's start estimate (``SamplerOptions.start``): the cs-wavelet image or the zero-filled data."""

from __future__ import annotations

import pytest
import torch
from test_cgs_refine import _multicoil, _problem, _sampler_data

from kspace_ldm.errors import InputError
from kspace_ldm.ops import fft2c
from kspace_ldm.sampling import cgs_refine as cr
from kspace_ldm.sampling.cgs import CGS_DEFAULTS, CGS_STARTS, SamplerOptions, resolve_start
from kspace_ldm.sampling.cs import CS_DEFAULTS_MULTICOIL, CSOptions, cs_reconstruct


def test_cs_start_is_the_cs_wavelet_baseline():
    """The start image is the cs-wavelet baseline (FISTA from zero-filled, same scaling and
    cycle-spin shifts), computed with the strided haar instead of ptwt's matrices. Tolerance
    1e-3 relative to the image maximum: the two haar implementations round differently and 200
    FISTA iterations carry that forward (measured 5.5e-4 at 200 iterations on a 96 x 96 demo
    slice; 2.3e-6 here at 30 over seeds 0-3)."""
    _, masked, mask = _problem(4, h=32, w=32)
    ours = cr.cs_start(masked, mask, 0.01, 30)
    assert ours.shape == (2, 1, 32, 32) and ours.dtype == torch.complex64
    ref = cs_reconstruct("cs-wavelet", masked, mask, CSOptions(lam=0.01, iterations=30))
    assert float((ours[:, 0] - ref).abs().max() / ref.abs().max()) < 1e-3


def test_multicoil_cs_start_is_the_multicoil_baseline():
    """With maps: the multi-coil cs-wavelet image on the same SENSE model (tolerance as above;
    measured 1.4e-6 over seeds 0-3)."""
    _, masked, mask, maps = _multicoil(0)
    ours = cr.cs_start(masked, mask, 0.01, 30, maps=maps)
    assert ours.shape == (2, 1, 32, 20)
    ref = cs_reconstruct("cs-wavelet", masked, mask, CSOptions(lam=0.01, iterations=30), maps=maps)
    assert float((ours[:, 0] - ref).abs().max() / ref.abs().max()) < 1e-3
    with pytest.raises(InputError, match="needs SENSE maps"):
        cr.cs_start(masked, mask, 0.01, 3)


def test_defaults_and_option_check():
    assert CGS_DEFAULTS["start"] == "cs-wavelet" and set(CGS_STARTS) == {
        "cs-wavelet",
        "zero-filled",
    }
    assert resolve_start(SamplerOptions()) == "cs-wavelet"
    assert resolve_start(SamplerOptions(start="zero-filled")) == "zero-filled"
    with pytest.raises(InputError, match="unknown start 'cs-tv'"):
        SamplerOptions(start="cs-tv")
    settings = cr.cs_start_settings()  # what the export manifest records for the C++ sampler
    assert settings == {"lam": 0.001, "lam_multicoil": 0.005, "iterations": 200}


def test_sampler_start_kspace_and_its_effect(gen):
    """The CS start is data consistent (measured samples exact), is what start_kspace returns,
    and changes the result; the zero-filled start is the encoded data itself (None)."""
    from tiny_models import tiny_sampler

    sampler = tiny_sampler()
    masked, mask = _sampler_data()
    start = sampler.start_kspace(masked, mask, SamplerOptions())
    assert start.shape == masked.shape and torch.equal(start[..., mask], masked[..., mask])
    x = cr.cs_start(masked, mask, 0.001, 200)
    expect = torch.where(mask, masked, fft2c(x))
    assert torch.equal(start, expect)
    assert sampler.start_kspace(masked, mask, SamplerOptions(start="zero-filled")) is None

    opts = SamplerOptions(steps=2, t0=50)
    cs = sampler.sample(masked, mask, opts, torch.Generator().manual_seed(0))
    zf = sampler.sample(masked, mask, SamplerOptions(steps=2, t0=50, start="zero-filled"), gen)
    by_hand = sampler.cgs(masked, mask, opts, torch.Generator().manual_seed(0), start=start)
    assert torch.equal(cs, by_hand)
    for out in (cs, zf):
        assert torch.equal(out[..., mask], masked[..., mask])
    assert (cs[..., ~mask] - zf[..., ~mask]).abs().max() > 1e-4


def test_coil_agnostic_path_uses_the_multicoil_cs_start(gen, monkeypatch):
    """On the coil-agnostic path the encoder is seeded with the multi-coil cs-wavelet image
    (lam of CS_DEFAULTS_MULTICOIL) on the same maps; the zero-filled start keeps CG-SENSE."""
    from tiny_models import tiny_sampler

    sampler = tiny_sampler()
    _, masked, mask, maps = _multicoil(2, h=16, w=20)
    calls = []
    real = cr.cs_start

    def spy(y, m, lam, iterations, maps=None):
        calls.append((lam, iterations, maps is not None))
        return real(y, m, lam, iterations, maps=maps)

    monkeypatch.setattr(cr, "cs_start", spy)
    a = sampler.sample(masked, mask, SamplerOptions(steps=2, t0=50), gen, maps=maps)
    assert calls == [(CS_DEFAULTS_MULTICOIL["cs-wavelet"]["lam"], 200, True)]
    b = sampler.sample(
        masked, mask, SamplerOptions(steps=2, t0=50, start="zero-filled"), gen, maps=maps
    )
    assert len(calls) == 1  # not called for the zero-filled start
    assert torch.equal(a[..., mask], masked[..., mask]) and torch.equal(
        b[..., mask], masked[..., mask]
    )
    assert (a - b).abs().max() > 1e-4


def test_kldm_recon_start_option(tmp_path):
    """--start reaches the sampler and is recorded; a bad value is a one-line usage error."""
    import h5py
    from cli_runner import run

    run("data", "synth", tmp_path / "d", "--test", 1, "--shape", "48x40", "--recon-size", 32,
        "--slices", 1)  # fmt: skip
    data = tmp_path / "d" / "singlecoil_test"
    from kspace_ldm.pretrained import demo_model

    model = demo_model()[0]
    outs = {}
    for start in ("cs-wavelet", "zero-filled"):
        out = tmp_path / start
        run("recon", data, "--out", out, "--model", model, "--start", start)
        (f,) = out.glob("*.h5")
        with h5py.File(f) as h:
            assert h.attrs["start"] == start
            outs[start] = h["reconstruction"][()]
    assert abs(outs["cs-wavelet"] - outs["zero-filled"]).max() > 0
    res = run("recon", data, "--out", tmp_path / "x", "--model", model, "--start", "bart", ok=False)
    assert res.exit_code == 2 and "Invalid value for '--start'" in res.output
