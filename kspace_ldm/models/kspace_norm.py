"""k-space <-> network tensors: normalisation, optional spectrum weighting, and image formation.

The first-stage networks are real-valued, so complex k-space ``[B, C, H, W]`` crosses as
``[B, 2C, H, W]`` (interleaved re/im, :func:`~kspace_ldm.physics.complex_to_channels`). Its dynamic
range is the central problem (docs/results.md, "k-space dynamic range"): the DC region is 2-4
orders of magnitude above the periphery, so a loss on the raw standardised values sees a few
central samples and a network can score well by predicting almost nothing elsewhere.

Normalisation modes (``mode``):

* ``"standardize"`` -- the reference's ``norm``: per sample and per real channel, subtract the mean
  and divide by the (unbiased) standard deviation over ``H * W``. It needs the *fully sampled*
  k-space, which is not available when reconstructing undersampled data (reference bug 4).
* ``"rms"`` -- divide the complex k-space by one positive scale per sample: its RMS magnitude over
  all coils and samples, so every input has exactly unit power. The networks' GroupNorm /
  InstanceNorm layers discard each sample's absolute scale, so only an input normalised to a fixed
  power lets them reproduce the amplitude (docs/results.md measures this: the per-sample spread of
  any other statistic turns into a reconstruction error). No mean is subtracted, so the map is
  linear and commutes with complex phase. At test time on undersampled data the full-k-space RMS
  is unknown; the decoder's output is unit-power k-space whose one free scalar the sampler fits to
  the measured lines (least squares), which is exact for a correct shape.
* ``"acs"`` -- divide the complex k-space by one positive scale per sample: the RMS magnitude of the
  central calibration (ACS) columns, ``acs_fraction * W`` columns around ``W // 2`` over all rows
  and coils. Every fastMRI mask samples those columns fully (centre fraction >= 0.04), so exactly
  the same statistic is available at test time from the undersampled data. No mean is subtracted
  (a complex offset has no physical meaning in k-space), so the map is linear and zero stays zero.
* ``"none"`` -- raw k-space (the reference's UnetWONO).

Spectrum weighting (``weighting="radial"``): after normalising, k-space is multiplied by
``w(k) = ((r^2 + r0^2) / r0^2) ** (power / 2)``, ``r`` the normalised radius
(``sqrt((ky/H)^2 + (kx/W)^2)``, 0 at DC, ~0.7 at the corners). ``w(0) = 1`` and it grows towards
the periphery, flattening the spectrum the network sees; :meth:`KspaceNormalizer.denormalize`
divides it out exactly.

Log companding (``weighting="log"``): each real channel value ``v`` of the normalised k-space maps
to ``sign(v) * log1p(|v| / c)`` with ``c = log_c``, the mu-law of audio coding. Samples far above
``c`` are represented by their *relative* size, those below linearly, so the DC peak and the
periphery occupy comparable ranges and a network error of ``d`` is a relative error of about
``d`` wherever the signal is strong. The inverse is ``sign(y) * c * expm1(|y|)``, with ``|y|``
clamped at ``log_clamp`` so an untrained network cannot overflow it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops  # kldm::kspace_normalize / kspace_denormalize / ifft2c / rss (Python autograd)
from ..errors import InputError
from ..physics.transforms import center_crop, channels_to_complex, complex_to_channels

__all__ = ["NORM_MODES", "WEIGHTINGS", "KspaceNormalizer", "NormStats"]

NORM_MODES = ("rms", "standardize", "acs", "none")
WEIGHTINGS = ("none", "radial", "log")


@dataclass
class NormStats:
    """What :meth:`KspaceNormalizer.denormalize` needs to undo a normalisation.

    Attributes:
        shift: ``[B, 2C, 1, 1]`` real channel means (``standardize``) or ``None``.
        scale: ``[B, 2C, 1, 1]`` (``standardize``) or ``[B, 1, 1, 1]`` (``rms``, ``acs``) scales,
            or ``None`` (``none``).
    """

    shift: torch.Tensor | None
    scale: torch.Tensor | None


class KspaceNormalizer:
    """Maps complex k-space to the real network domain and back (see the module docstring).

    Args:
        mode: ``"rms"``, ``"standardize"``, ``"acs"`` or ``"none"``.
        acs_fraction: fraction of the columns around ``W // 2`` used by ``"acs"``.
        weighting: ``"none"`` or ``"radial"``.
        weight_power: exponent ``p`` of the radial weight.
        weight_r0: knee ``r0`` of the radial weight (normalised frequency units).
        log_c: linear-to-log knee ``c`` of the log companding (normalised units).
        log_clamp: bound on ``|y|`` before expanding (``c * expm1(log_clamp)`` is the largest
            representable magnitude).
        eps: floor on scales, so an all-zero slice does not divide by zero.
    """

    def __init__(
        self,
        mode: str = "rms",
        acs_fraction: float = 0.04,
        weighting: str = "none",
        weight_power: float = 1.0,
        weight_r0: float = 0.02,
        log_c: float = 1e-3,
        log_clamp: float = 20.0,
        eps: float = 1e-12,
    ):
        if mode not in NORM_MODES:
            raise InputError("normalization.mode", f"must be one of {NORM_MODES}, got {mode!r}")
        if weighting not in WEIGHTINGS:
            raise InputError(
                "normalization.weighting", f"must be one of {WEIGHTINGS}, got {weighting!r}"
            )
        if not 0.0 < acs_fraction <= 1.0:
            raise InputError("normalization.acs_fraction", f"must be in (0, 1], got {acs_fraction}")
        if log_c <= 0:
            raise InputError("normalization.log_c", f"must be > 0, got {log_c}")
        if weight_r0 <= 0:
            raise InputError("normalization.weight_r0", f"must be > 0, got {weight_r0}")
        self.mode = mode
        self.acs_fraction = float(acs_fraction)
        self.weighting = weighting
        self.weight_power = float(weight_power)
        self.weight_r0 = float(weight_r0)
        self.log_c = float(log_c)
        self.log_clamp = float(log_clamp)
        self.eps = float(eps)

    # ------------------------------------------------------------------------------------------
    def acs_columns(self, width: int) -> slice:
        """The calibration columns used by ``"acs"``: ``max(2, round(acs_fraction * W))`` around
        ``W // 2`` (the DC column)."""
        n = min(width, max(2, round(self.acs_fraction * width)))
        start = width // 2 - n // 2
        return slice(start, start + n)

    def weight(self, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The spectrum weight ``[H, W]`` (all ones unless ``weighting="radial"``)."""
        if self.weighting != "radial":
            return torch.ones(height, width, device=device, dtype=dtype)
        ky = (torch.arange(height, device=device, dtype=torch.float64) - height // 2) / height
        kx = (torch.arange(width, device=device, dtype=torch.float64) - width // 2) / width
        r2 = ky[:, None] ** 2 + kx[None, :] ** 2
        r02 = self.weight_r0**2
        return ((r2 + r02) / r02).pow(self.weight_power / 2).to(dtype)

    # ------------------------------------------------------------------------------------------
    def normalize(self, kspace: torch.Tensor) -> tuple[torch.Tensor, NormStats]:
        """Complex ``[B, C, H, W]`` k-space -> real ``[B, 2C, H, W]`` network input and stats."""
        if not kspace.is_complex() or kspace.dim() != 4:
            raise InputError(
                "normalize",
                f"k-space must be complex [B, C, H, W], got {kspace.dtype} {tuple(kspace.shape)}",
            )
        if self.mode == "standardize":
            # kldm::kspace_normalize computes the statistics (float64 accumulation) and writes the
            # channels in one pass. A channel whose std is <= eps (a constant one, e.g. an all-zero
            # imaginary part) is centred and divided by 1 -- the plain `clamp_min(eps)` divided
            # its rounding noise by eps; every other channel is unchanged to rounding.
            x, shift, scale = ops.kspace_normalize(kspace, eps=self.eps)
            stats = NormStats(shift, scale)
        elif self.mode in ("rms", "acs"):
            src = kspace if self.mode == "rms" else kspace[..., self.acs_columns(kspace.shape[-1])]
            scale = src.abs().square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            scale = scale.clamp_min(self.eps)
            stats = NormStats(None, scale)
            x = channels_with(kspace, stats)
        else:
            x = complex_to_channels(kspace)
            stats = NormStats(None, None)
        if self.weighting == "radial":
            x = x * self.weight(*x.shape[-2:], device=x.device, dtype=x.dtype)
        elif self.weighting == "log":
            x = torch.sign(x) * torch.log1p(x.abs() / self.log_c)
        return x, stats

    def denormalize(self, x: torch.Tensor, stats: NormStats) -> torch.Tensor:
        """Real ``[B, 2C, H, W]`` network output -> complex ``[B, C, H, W]`` k-space (exact inverse
        of :meth:`normalize`; computed in float32 at least)."""
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if self.weighting == "radial":
            x = x / self.weight(*x.shape[-2:], device=x.device, dtype=x.dtype)
        elif self.weighting == "log":
            x = torch.sign(x) * self.log_c * torch.expm1(x.abs().clamp_max(self.log_clamp))
        if stats.scale is None and stats.shift is None:
            return channels_to_complex(x)
        # kldm::kspace_denormalize: x * scale + shift and the interleave to complex in one pass
        # (a missing statistic is the identity: scale 1, shift 0, which changes no value).
        one = x.new_ones(())
        scale = one if stats.scale is None else stats.scale.to(x.dtype)
        shift = one.new_zeros(()) if stats.shift is None else stats.shift.to(x.dtype)
        return ops.kspace_denormalize(x, shift, scale)

    def to_image(
        self, x: torch.Tensor, stats: NormStats, crop: tuple[int, int] | None
    ) -> torch.Tensor:
        """Network-domain k-space ``[B, 2C, H, W]`` -> magnitude/RSS image ``[B, h, w]``.

        The crop is clipped to the k-space size (random training crops can be smaller than the
        recon size).
        """
        k = self.denormalize(x, stats)
        if crop is not None:
            crop = (min(crop[0], k.shape[-2]), min(crop[1], k.shape[-1]))
        # kspace_to_image(k, crop, coil_dim=1) on the native ops (their autograd is registered
        # from Python, kspace_ldm.ops._meta, so the image-domain losses train through them):
        # kldm::ifft2c, the crop, then kldm::rss over the coil dim ([B, C, h, w] -> [B, h, w]).
        image = ops.ifft2c(k)
        if crop is not None:
            image = center_crop(image, crop)
        return ops.rss(image)


def channels_with(kspace: torch.Tensor, stats: NormStats) -> torch.Tensor:
    """Complex ``[B, C, H, W]`` k-space -> real ``[B, 2C, H, W]`` channels
    ``(channel - shift) / scale`` with given statistics (``None``: 0 / 1), before any spectrum
    weighting.

    One pass of ``kldm::kspace_normalize`` with given statistics (float32 for complex64), with
    ``eps = 0``: the op divides by 1 where a given scale is 0 (every scale here is clamped to
    ``KspaceNormalizer.eps`` first, so that never happens); every other value is
    ``(channel - shift) / scale`` as the plain expression computes it.
    """
    if stats.scale is None and stats.shift is None:
        return complex_to_channels(kspace)
    real = kspace.real.dtype
    one = torch.ones((), dtype=real, device=kspace.device)
    scale = one if stats.scale is None else stats.scale.to(real)
    shift = torch.zeros_like(one) if stats.shift is None else stats.shift.to(real)
    return ops.kspace_normalize(kspace, shift, scale, eps=0.0)[0]
