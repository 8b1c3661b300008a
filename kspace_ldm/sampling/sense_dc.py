"""Coil-agnostic multi-coil sampling: a single-coil model with SENSE data consistency.

The first stage and the denoiser see one complex k-space, the coil-combined ``F S^H F^-1 y``
(``S`` ESPIRiT maps with ``sum_c |S_c|^2 = 1`` on the support), so a model trained on single-coil
data serves any coil count. Data consistency is against every coil's measured samples through
the SENSE operator ``A x = M F (S x)``:

* **soft SENSE projection** (inside ``cgs``, replacing the single-coil sample replacement): from
  the decoded estimate ``x_p = F^-1 k``, a few conjugate-gradient steps (warm-started at ``x_p``)
  on the normal equations ``(A^H A + lam I) x = A^H y + lam x_p``; ``lam -> 0`` is the SENSE
  solution closest to the prior, ``lam`` large keeps the prior;
* **start**: the same solve from ``x_p = 0`` (regularised CG-SENSE, ``start_lam``,
  ``start_iters``); its combined k-space is what the encoder sees first, and its values on the
  measured columns stand in for the single-coil measurement wherever ``cgs`` needs one (the
  normalisation statistics and their refit, and the residual of ``guidance > 0``, which is
  therefore only approximate on this path; the default guidance is 0);
* **kept first-stage error** (``residual``): the single-coil first stage cannot represent all of
  the parallel-imaging detail of the CS start; ``residual * (start - D(E(start)))`` is added to
  every decoded estimate (:meth:`~kspace_ldm.sampling.cgs.KspaceLDMSampler.cgs`), so the prior
  changes the start rather than replacing it by its own projection;
* **final prior-regularised solve** (``final_lam``, ``final_iters``) from the last estimate;
* **final hard per-coil consistency**: the coil k-space ``F (S x)`` with every coil's measured
  samples replaced by the data (``kldm::dc_project``), so the output equals the measurement bit
  for bit there; the image is the RSS of this coil k-space (fastMRI's ``reconstruction_rss``).

``A`` and ``A^H`` are the native ``kldm::sense_forward`` / ``kldm::sense_adjoint`` ops (CPU and
CUDA kernels), the FFTs ``kldm::fft2c`` / ``kldm::ifft2c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..ops import dc_project, fft2c, ifft2c, sense_adjoint, sense_forward

__all__ = ["SENSE_DEFAULTS", "SenseConsistency", "check_maps", "coil_agnostic_sample"]

# lam and the CG iterations, chosen on synthetic *validation* volumes (docs/results.md,
# "Multi-coil, coil-agnostic"), never on the test volumes.
SENSE_DEFAULTS = {
    "lam": 0.5,
    "iters": 8,
    "final_lam": 0.1,
    "final_iters": 5,
    "start_lam": 0.5,
    "start_iters": 10,
    "residual": 0.5,
}


def check_maps(maps: torch.Tensor, kspace: torch.Tensor, source: str = "maps") -> None:
    """One-line :class:`InputError` unless ``maps`` fit ``kspace [B, C, H, W]`` and are finite."""
    if not isinstance(maps, torch.Tensor) or not maps.is_complex() or maps.dim() != 4:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise InputError(source, f"coil maps must be complex [B, C, H, W], got {shape}")
    if maps.shape[1] != kspace.shape[1]:
        raise InputError(
            source, f"{maps.shape[1]} coil maps for k-space with {kspace.shape[1]} coils"
        )
    if tuple(maps.shape[-2:]) != tuple(kspace.shape[-2:]) or maps.shape[0] not in (
        1,
        kspace.shape[0],
    ):
        raise InputError(
            source,
            f"map shape {tuple(maps.shape)} does not match k-space {tuple(kspace.shape)}",
        )
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise InputError(source, "coil maps contain NaN or Inf")
    if not bool((maps != 0).any()):
        raise InputError(source, "coil maps are all zero (no support)")


@dataclass
class SenseConsistency:
    """SENSE data consistency of one batch.

    Attributes:
        y: measured multi-coil k-space ``[B, C, H, W]`` complex, zero where not sampled.
        mask: bool sampling mask broadcastable to ``y`` (``[B|1, 1, H|1, W]``).
        maps: coil sensitivities ``[B|1, C, H, W]`` of ``y``'s dtype.
        lam: weight of the prior in the soft projection.
        iters: CG iterations per soft projection.
    """

    y: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    lam: float = SENSE_DEFAULTS["lam"]
    iters: int = SENSE_DEFAULTS["iters"]
    final_lam: float = SENSE_DEFAULTS["final_lam"]
    final_iters: int = SENSE_DEFAULTS["final_iters"]

    def __post_init__(self):
        self.mask = self.mask.to(self.y.device)
        self.maps = self.maps.to(self.y.device, self.y.dtype)
        self._aty = sense_adjoint(self.y, self.maps, self.mask)  # A^H y, [B, 1, H, W]

    def normal(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        """``(A^H A + lam I) x`` for ``x [B, 1, H, W]``."""
        return sense_adjoint(sense_forward(x, self.maps, self.mask), self.maps, self.mask) + (
            lam * x
        )

    def solve(
        self, prior: torch.Tensor, iters: int | None = None, lam: float | None = None
    ) -> torch.Tensor:
        """``iters`` CG steps on ``(A^H A + lam I) x = A^H y + lam prior``, from ``x = prior``.

        Per-sample step sizes (the batch entries are independent problems).
        """
        iters = self.iters if iters is None else iters
        lam = self.lam if lam is None else lam
        x = prior.clone()
        r = self._aty + lam * prior - self.normal(x, lam)
        p = r.clone()
        rr = _dot(r, r)
        for _ in range(iters):
            q = self.normal(p, lam)
            alpha = rr / _dot(p, q).clamp_min(1e-30)
            x = x + alpha * p
            r = r - alpha * q
            rr_new = _dot(r, r)
            p = r + (rr_new / rr.clamp_min(1e-30)) * p
            rr = rr_new
        return x

    def start(self) -> torch.Tensor:
        """Regularised CG-SENSE image from a zero prior, ``[B, 1, H, W]`` (``start_lam``,
        ``start_iters``: CG stopped early, the best plain CG-SENSE on the validation volumes)."""
        zero = torch.zeros_like(self._aty)
        return self.solve(zero, SENSE_DEFAULTS["start_iters"], SENSE_DEFAULTS["start_lam"])

    def project(self, k: torch.Tensor) -> torch.Tensor:
        """Soft SENSE projection of combined k-space ``[B, 1, H, W]`` (same shape out)."""
        return fft2c(self.solve(ifft2c(k.contiguous())))

    def final(self, k: torch.Tensor) -> torch.Tensor:
        """Combined k-space ``[B, 1, H, W]`` -> coil k-space ``[B, C, H, W]`` with every coil's
        measured samples exactly the data: a final prior-regularised SENSE solve
        (``final_lam``, ``final_iters``) from the sampler's estimate, then per-coil replacement."""
        x = self.solve(ifft2c(k.contiguous()), self.final_iters, self.final_lam)
        coils = sense_forward(x, self.maps)
        return dc_project(coils, self.y, self.mask, 1.0)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product ``Re <a, b>`` as ``[B, 1, 1, 1]``."""
    return (a.conj() * b).real.sum(dim=(1, 2, 3), keepdim=True)


def coil_agnostic_sample(
    sampler,
    masked: torch.Tensor,
    mask: torch.Tensor,
    maps: torch.Tensor,
    options,
    generator: torch.Generator | None = None,
    lam: float = SENSE_DEFAULTS["lam"],
    iters: int = SENSE_DEFAULTS["iters"],
    final_lam: float = SENSE_DEFAULTS["final_lam"],
    final_iters: int = SENSE_DEFAULTS["final_iters"],
    residual: float = SENSE_DEFAULTS["residual"],
) -> torch.Tensor:
    """``cgs`` of a single-coil :class:`~kspace_ldm.sampling.cgs.KspaceLDMSampler` on multi-coil
    data (module docstring).

    Args:
        masked: ``[B, C, H, W]`` complex measured k-space, zero where not sampled.
        mask: bool sampling mask broadcastable to it.
        maps: ``[B|1, C, H, W]`` coil sensitivities (e.g. ESPIRiT).
        options: :class:`~kspace_ldm.sampling.cgs.SamplerOptions` (``samples`` averages).
        residual: the kept fraction of the first stage's error on the start (module docstring).

    Returns:
        ``[B, C, H, W]`` coil k-space, equal to ``masked`` on every measured sample.
    """
    from .cgs import _as_mask, resolve_start

    if sampler.ae.in_channels != 2:
        raise InputError(
            "sampler",
            f"coil-agnostic reconstruction needs a single-coil model, this first stage takes "
            f"{sampler.ae.in_channels // 2} coils",
        )
    check_maps(maps, masked)
    m = _as_mask(mask, masked)
    dc = SenseConsistency(masked, m, maps, lam, iters, final_lam, final_iters)
    # The combined k-space of the CG-SENSE start on the measured columns plays the single-coil
    # measurement for the normalisation statistics; the start image itself seeds the encoder.
    k_start = fft2c(dc.start())
    y_comb = k_start * m
    if resolve_start(options) == "cs-wavelet":
        # The CS start (SamplerOptions.start): the multi-coil cs-wavelet image on the same SENSE
        # model seeds the encoder; the statistics stay those of the CG-SENSE start (from the CS
        # image's columns they were worse on validation: 22.52 vs 23.54 dB at 4x).
        from .cgs_refine import cs_start
        from .cs import resolve_settings

        cs = resolve_settings("cs-wavelet", coils=masked.shape[1])
        k_start = fft2c(cs_start(masked, m, cs["lam"], cs["iterations"], maps=maps))
    out = None
    for _ in range(max(1, options.samples)):
        k = sampler.cgs(
            y_comb,
            m,
            options,
            generator,
            project=dc.project,
            final=dc.final,
            start=k_start,
            residual=residual,
        )
        out = k if out is None else out + k
    return dc_project(out / max(1, options.samples), masked, m, 1.0)
