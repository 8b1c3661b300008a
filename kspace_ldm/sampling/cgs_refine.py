"""CS-regularised final consistency around a ``cgs`` estimate (the ``cgs`` + L1-wavelet hybrid).

Given the ``cgs`` k-space ``k_c`` (image ``x_c = F^-1 k_c``) and the measurements ``y``, solve per
slice

    min_x  0.5 ||M F x - y||^2  +  lam * sum |W x|_detail  +  0.5 * mu * ||x - x_c||^2

by FISTA on the native ``fft2c`` ops, with the orthonormal multi-level haar transform ``W`` of the
``cs-wavelet`` baseline (the approximation band is not penalised; random cycle spinning as BART
and :func:`kspace_ldm.sampling.cs.fista_wavelet`), the data scaled by the 99th percentile of the
zero-filled magnitude as there (so ``lam`` and ``mu`` are relative to the image intensity), then
(``dc=True``) a hard data consistency: the output equals ``y`` on every measured sample.

Why: the ``cgs`` prior (the latent denoiser through a first stage that is not idempotent) and the
sparsity prior make different errors; the quadratic term is the ``cgs`` estimate read as a
Gaussian prior mean around which the sparsity prior and the data are reconciled. ``mu = 0`` is
plain ``cs-wavelet`` started from the ``cgs`` estimate, ``mu -> inf`` returns ``cgs``. The weights
are chosen on the validation split (docs/results.md, "cgs against compressed sensing").

The haar transform here is written with strided slices (it is exactly the orthonormal haar of
``ptwt`` up to the signs and order of the detail bands, which the L1 norm and its prox do not
see; tests/test_cgs_refine.py checks the prox against :func:`kspace_ldm.sampling.cs.wavelet_prox`).

Multi-coil (the coil-agnostic path, ``maps`` given): ``A x = M F (S x)`` with the ESPIRiT maps
of the ``cgs`` SENSE consistency (the model of the multi-coil ``cs-wavelet`` baseline), ``x_c``
the coil-combined ``cgs`` image ``S^H F^-1 k_c``, and the final hard consistency per coil on
``F (S x)``; ``||A||^2 <= 1`` for maps with ``sum_c |S_c|^2 <= 1``, so the FISTA step is the same.

Shapes: k-space complex ``[B, C, H, W]`` (``C = 1`` single-coil, or ``C`` coils with maps
``[B|1, C, H, W]``); masks as :func:`kspace_ldm.sampling.cgs._as_mask`.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..ops import dc_project, fft2c, ifft2c, sense_adjoint, sense_forward
from .cs import _Forward, _padded, _scale

__all__ = [
    "REFINE_DEFAULTS",
    "REFINE_DEFAULTS_MULTICOIL",
    "REFINE_METHODS",
    "cs_refine",
    "cs_start",
    "haar_prox",
    "refine",
    "refine_objective",
]

REFINE_METHODS = ("cs-wavelet",)
# Chosen on the VALIDATION split of the demo data (2 volumes x 8 slices, 4x and 8x) by
#   .venv/bin/python scripts/tune_cgs.py DATA/singlecoil_val --variants cgsrz:5:150:1:LAM:MU:IT,...
# as the setting with the largest worst-case PSNR margin over the better CS baseline at 4x and 8x
# (docs/results.md, "cgs + CS hybrid"): FISTA from the zero-filled image (with mu = 0 it is the
# cs-wavelet baseline), the cs-wavelet weight lam 0.001, mu 0.001, 100 iterations.
REFINE_DEFAULTS = {"lam": 0.001, "mu": 0.001, "iterations": 100, "start": "zero-filled"}
# Multi-coil (coil-agnostic path) overrides: lam = the multi-coil cs-wavelet weight
# (sampling/cs.py CS_DEFAULTS_MULTICOIL, chosen on 8-coil validation volumes); mu chosen on the
# same validation volumes (docs/results.md, "Multi-coil cgs-cs").
REFINE_DEFAULTS_MULTICOIL = {"lam": 0.01, "mu": 0.01}
_LEVELS = 4  # as cs-wavelet's default (haar, level 4 at 96 x 96: coarsest band 6 x 6)


def _levels(h: int, w: int, max_level: int = _LEVELS) -> int:
    """Levels such that the coarsest band is at least 2 samples (cs.wavelet_level for haar)."""
    level = 1
    while level < max_level and min(h, w) // 2 ** (level + 1) >= 2:
        level += 1
    return level


def _haar_split(x: torch.Tensor):
    """One orthonormal 2-D haar level: ``[B, H, W]`` (even) -> (LL, (LH, HL, HH)), each
    ``[B, H/2, W/2]``."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) * 0.5, (
        (a - b + c - d) * 0.5,
        (a + b - c - d) * 0.5,
        (a - b - c + d) * 0.5,
    )


def _haar_merge(ll: torch.Tensor, details) -> torch.Tensor:
    lh, hl, hh = details
    out = ll.new_empty((*ll.shape[:-2], 2 * ll.shape[-2], 2 * ll.shape[-1]))
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) * 0.5
    out[..., 0::2, 1::2] = (ll - lh + hl - hh) * 0.5
    out[..., 1::2, 0::2] = (ll + lh - hl - hh) * 0.5
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) * 0.5
    return out


def _soft(c: torch.Tensor, t: float) -> torch.Tensor:
    """Complex soft-thresholding: the prox of ``t |c|``."""
    mag = c.abs()
    return c * (torch.clamp(mag - t, min=0) / mag.clamp_min(torch.finfo(mag.dtype).tiny))


def haar_details(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The detail coefficients of ``levels`` haar levels of complex ``[B, Hp, Wp]``."""
    out = []
    for _ in range(levels):
        x, det = _haar_split(x)
        out.extend(det)
    return out


def haar_prox(x: torch.Tensor, t: float, levels: int) -> torch.Tensor:
    """Exact prox of ``t * sum |W x|_detail`` for complex ``[B, Hp, Wp]`` (sides multiples of
    ``2**levels``; ``W`` orthonormal, so the prox is synthesis(soft(analysis)))."""
    if levels == 0:
        return x
    ll, det = _haar_split(x)
    ll = haar_prox(ll, t, levels - 1)
    return _haar_merge(ll, tuple(_soft(c, t) for c in det))


class _Problem(_Forward):
    """The scaled problem: the CS baselines' operator ``A`` on the padded grid ``[B, Hp, Wp]``
    (:class:`~.cs._Forward`, single-coil or SENSE with ``maps``) plus the prior mean ``x_c``
    ``[B, H, W]`` of the quadratic term."""

    def __init__(self, y, mask, x_c, padded, maps=None):
        super().__init__(y, mask, maps, padded)  # y [B, C, H, W]
        self.x_c = x_c

    def smooth_grad(self, z, mu):
        g = self.adjoint(self.forward(z) - self.y)
        return g + mu * self._pad(self._crop(z) - self.x_c) if mu > 0 else g


def refine_objective(problem: _Problem, z, lam: float, mu: float, levels: int) -> torch.Tensor:
    """The objective of the module docstring per slice, ``[B]`` float64 (scaled units)."""
    r = problem.forward(z) - problem.y
    data = 0.5 * r.abs().double().square().sum(dim=(1, 2, 3))
    l1 = sum(c.abs().double().sum(dim=(-2, -1)) for c in haar_details(z, levels))
    prior = 0.5 * (problem._crop(z) - problem.x_c).abs().double().square().sum(dim=(-2, -1))
    return data + lam * l1 + mu * prior


def _scaled_problem(masked, mask, maps, x_c):
    """``(problem, mask [B|1, 1, H|1, W] bool, scale [B, 1, 1], levels)``: the measurements and
    the prior mean ``x_c`` (None for none) divided by the 99th percentile of the zero-filled
    (coil-combined) magnitude, on the grid padded to a multiple of ``2**levels``."""
    from .cgs import _as_mask

    m = _as_mask(mask, masked)
    mr = m.to(masked.real.dtype)
    H, W = masked.shape[-2:]
    levels = _levels(H, W)
    padded = (_padded(H, 2**levels), _padded(W, 2**levels))
    if maps is None:
        zero_filled = ifft2c(masked * mr)[:, 0]  # [B, H, W]
    else:
        zero_filled = sense_adjoint(masked.contiguous(), maps, m)[:, 0]
    s = _scale(zero_filled)[:, None, None]  # [B, 1, 1]
    x_c = None if x_c is None else x_c / s
    return _Problem(masked * mr / s[:, None], mr, x_c, padded, maps), m, s, levels


def cs_refine(
    k_cgs: torch.Tensor,
    masked: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
    mu: float,
    iterations: int,
    *,
    cycle_spin: bool = True,
    dc: bool = True,
    start: str = "cgs",
    seed: int = 0,
    history: list | None = None,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The hybrid of the module docstring.

    Args:
        k_cgs: complex ``[B, C, H, W]``, the ``cgs`` k-space (coil k-space for ``C > 1``).
        masked: complex ``[B, C, H, W]`` measured k-space (zero where not sampled).
        mask: bool, broadcastable to it (``[W]``, ``[H, W]``, ``[B|1, 1, H|1, W]``).
        lam / mu: sparsity and prior weights (scaled units); ``iterations``: FISTA iterations.
        cycle_spin: random circular shifts in ``[0, 2**levels)`` before each prox (seeded by
            ``seed``, so results are reproducible).
        dc: finish with a hard data consistency (measured samples exact).
        start: FISTA's starting point, ``"cgs"`` (the estimate) or ``"zero-filled"`` (as the
            ``cs-wavelet`` baseline: with ``mu = 0`` the two then give the same iterates).
        history: when a list, the objective ``[B]`` of each iterate is appended (tests).
        maps: ``[B|1, C, H, W]`` SENSE maps for ``C``-coil k-space (checked by
            :func:`~.sense_dc.check_maps`); None: single-coil.

    Returns:
        complex ``[B, C, H, W]`` k-space, equal to ``masked`` on the measured samples (``dc``).
    """
    if masked.dim() != 4 or not masked.is_complex():
        raise InputError("--refine", "the CS refinement takes complex [B, C, H, W] k-space")
    if maps is None and masked.shape[1] != 1:
        raise InputError("--refine", f"{masked.shape[1]}-coil k-space needs SENSE maps")
    if maps is not None:
        from .sense_dc import check_maps

        check_maps(maps, masked, "--refine maps")
        maps = maps.to(masked.device, masked.dtype)
    if k_cgs.shape != masked.shape:
        raise InputError("--refine", f"cgs k-space {tuple(k_cgs.shape)} != {tuple(masked.shape)}")
    if lam < 0 or mu < 0 or iterations < 0:
        raise InputError("--refine", f"need lam, mu, iterations >= 0, got {lam} {mu} {iterations}")
    if maps is None:
        x_c = ifft2c(k_cgs)[:, 0]  # [B, H, W]
    else:  # the coil-combined image S^H F^-1 k
        x_c = sense_adjoint(k_cgs.contiguous(), maps)[:, 0]
    problem, m, s, levels = _scaled_problem(masked, mask, maps, x_c)
    if start not in ("cgs", "zero-filled"):
        raise InputError("--refine", f"unknown start {start!r} (cgs, zero-filled)")
    x0 = problem._pad(problem.x_c) if start == "cgs" else problem.adjoint(problem.y)
    x = _fista(problem, x0, lam, mu, iterations, levels, cycle_spin, seed, history)
    image = (problem._crop(x) * s)[:, None].contiguous()  # [B, 1, H, W]
    k = (fft2c(image) if maps is None else sense_forward(image, maps)).to(masked.dtype)
    return dc_project(k, masked, m, 1.0) if dc else k


def _fista(problem: _Problem, x, lam, mu, iterations, levels, cycle_spin, seed, history):
    """FISTA on :func:`refine_objective` from ``x [B, Hp, Wp]`` (scaled units), step
    ``1 / (1 + mu)`` (the Lipschitz constant of the smooth part: ``||A||^2 + mu <= 1 + mu``)."""
    span = 2**levels
    step = 1.0 / (1.0 + mu)
    gen = torch.Generator().manual_seed(seed)
    v, t = x, 1.0
    for _ in range(iterations):
        g = v - step * problem.smooth_grad(v, mu)
        if cycle_spin:
            sh, sw = (int(i) for i in torch.randint(0, span, (2,), generator=gen))
            g = torch.roll(g, (sh, sw), dims=(-2, -1))
            x_new = torch.roll(haar_prox(g, step * lam, levels), (-sh, -sw), dims=(-2, -1))
        else:
            x_new = haar_prox(g, step * lam, levels)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if history is not None:
            history.append(refine_objective(problem, x, lam, mu, levels))
    return x


def cs_start_settings() -> dict:
    """``{"lam", "lam_multicoil", "iterations"}`` of the CS start: the cs-wavelet defaults
    (:data:`.cs.CS_DEFAULTS`, :data:`.cs.CS_DEFAULTS_MULTICOIL`), as the export manifest records
    them for the C++ sampler."""
    from .cs import resolve_settings

    single, multi = resolve_settings("cs-wavelet"), resolve_settings("cs-wavelet", coils=2)
    return {"lam": single["lam"], "lam_multicoil": multi["lam"], "iterations": single["iterations"]}


def cs_start(
    masked: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
    iterations: int,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``cs-wavelet`` image that ``cgs`` starts from (``SamplerOptions.start``).

    The L1-wavelet baseline's problem and iterates (FISTA from the zero-filled image, haar,
    random cycle spinning seeded 0, the 99th-percentile scaling): :func:`cs_refine` with
    ``mu = 0``, written with the strided haar of this module so that the C++ sampler
    (csrc/sampler/cs_start.cpp) computes the same image without ptwt.

    Args:
        masked: complex ``[B, C, H, W]`` measured k-space (zero where not sampled).
        mask: bool, broadcastable to it.
        maps: ``[B|1, C, H, W]`` SENSE maps for ``C > 1`` (the coil-combined image), or None.

    Returns:
        complex ``[B, 1, H, W]`` image on the k-space grid (no data consistency applied).
    """
    if maps is None and masked.shape[1] != 1:
        raise InputError("--start", f"{masked.shape[1]}-coil k-space needs SENSE maps")
    if maps is not None:
        maps = maps.to(masked.device, masked.dtype)
    problem, _, s, levels = _scaled_problem(masked, mask, maps, None)
    x0 = problem.adjoint(problem.y)
    x = _fista(problem, x0, lam, 0.0, iterations, levels, True, 0, None)
    return (problem._crop(x) * s)[:, None].contiguous()


def resolve_refine(options, coils: int = 1) -> dict:
    """``{"lam", "mu", "iterations", "start"}`` of :class:`~.cgs.SamplerOptions` (None =
    default; ``coils > 1``: the coil-agnostic path's defaults)."""
    out = dict(REFINE_DEFAULTS)
    if coils > 1:
        out.update(REFINE_DEFAULTS_MULTICOIL)
    for key in ("lam", "mu", "iterations"):
        value = getattr(options, f"refine_{key}")
        if value is not None:
            out[key] = value
    return out


def refine(k_cgs, masked, mask, options, maps=None) -> torch.Tensor:
    """Apply ``options.refine`` (:class:`~.cgs.SamplerOptions`) to the ``cgs`` k-space
    (``maps``: the coil-agnostic path's SENSE maps for ``C``-coil k-space)."""
    if options.refine not in REFINE_METHODS:
        raise InputError(
            "--refine", f"unknown refinement {options.refine!r} ({', '.join(REFINE_METHODS)})"
        )
    r = resolve_refine(options, masked.shape[1])
    return cs_refine(
        k_cgs,
        masked,
        mask,
        float(r["lam"]),
        float(r["mu"]),
        int(r["iterations"]),
        start=r["start"],
        maps=maps,
    )
