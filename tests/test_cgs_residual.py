"""``cgs``'s kept first-stage error (``residual``, the coil-agnostic multi-coil default
``SENSE_DEFAULTS["residual"]``): ``residual * (start - D(E(start)))`` added to every decoded
estimate, so the prior changes the start instead of replacing it by its own projection."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_sampler

from kspace_ldm.data.synth import synth_volume
from kspace_ldm.physics.espirit import espirit_maps
from kspace_ldm.sampling.cgs import SamplerOptions, _as_mask
from kspace_ldm.sampling.sense_dc import SENSE_DEFAULTS, coil_agnostic_sample


def _single_coil(seed=0):
    vol = synth_volume(seed, coils=1, shape=(32, 32), recon_size=16, slices=2)
    k = torch.from_numpy(vol.kspace)[:, None]  # [S, 1, H, W]
    mask = torch.zeros(32, dtype=torch.bool)
    mask[::4] = True
    mask[13:19] = True
    return k, k * mask, _as_mask(mask, k)


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def unchanged():
    """A tiny sampler whose denoiser returns the consistent estimate it was given: the diffusion
    changes nothing, so what reaches the output is the first stage's round trip (and the
    residual)."""
    s = tiny_sampler(coils=1, seed=0, shift=0.01)
    made = s._consistent_latent

    def record(*args, **kw):
        s.last = made(*args, **kw)
        return s.last

    s._consistent_latent = record
    s.eps_x0 = lambda z, t: (torch.zeros_like(z), s.last)
    return s


def test_residual_one_keeps_the_start_the_projection_does_not(unchanged, one_thread):
    s = unchanged
    full, y, m = _single_coil()
    start = full.clone()  # a start the untrained first stage cannot represent
    # fixed statistics: with the refit the first encoding used the calibration estimate, the
    # re-encodings the fitted statistics, and the identity below holds only approximately
    opts = SamplerOptions(steps=2, t0=20, refit=False)
    same = dict(project=lambda k: k, final=lambda k: k, start=start)

    def run(residual):
        return s.cgs(y, m, opts, torch.Generator().manual_seed(0), residual=residual, **same)

    lost, kept = run(0.0), run(1.0)
    # without the residual the output is the first stage's projection of the start: far from it
    assert rel(lost, start) > 0.3, rel(lost, start)
    # with all of it, the start itself up to float32 rounding of k + (start - k) through the
    # untrained networks (measured 4.0e-4)
    assert rel(kept, start) < 2e-3, rel(kept, start)


def test_residual_zero_is_the_sampler_without_it(one_thread):
    s = tiny_sampler(coils=1, seed=0, shift=0.01)
    _, y, m = _single_coil(1)
    opts = SamplerOptions(steps=2, t0=50)
    a = s.cgs(y, m, opts, torch.Generator().manual_seed(3))
    b = s.cgs(y, m, opts, torch.Generator().manual_seed(3), residual=0.0)
    assert torch.equal(a, b)


def test_coil_agnostic_default_keeps_the_residual(one_thread):
    vol = synth_volume(0, coils=4, shape=(32, 32), recon_size=16, slices=1, coil_geometry="varied")
    k = torch.from_numpy(vol.kspace)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[::3] = True
    mask[12:20] = True
    y, m = k * mask, _as_mask(mask, k)
    maps = espirit_maps(y)
    s = tiny_sampler(coils=1, seed=0, shift=0.01)
    opts = SamplerOptions(steps=2, t0=50)
    assert SENSE_DEFAULTS["residual"] > 0

    def run(**kw):
        return coil_agnostic_sample(s, y, m, maps, opts, torch.Generator().manual_seed(0), **kw)

    default, explicit, none = run(), run(residual=SENSE_DEFAULTS["residual"]), run(residual=0.0)
    assert torch.equal(default, explicit)
    assert rel(default, none) > 1e-3
    assert torch.equal(default[m.expand_as(y)], y[m.expand_as(y)])  # per-coil hard consistency
