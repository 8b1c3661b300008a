"""Pure-PyTorch twins of the ``kldm`` kernels: the definitions the native ops are tested against.

They are written for clarity, not speed, and must stay numerically equivalent to the kernels
(same formula, same exact-copy semantics).
"""

from __future__ import annotations

import torch


def dc_project(
    pred: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """``(1 - a) * pred + a * measured`` with ``a = weight * mask``; exact copies at a = 0 and 1.

    Args:
        pred, measured: ``[..., H, W]`` complex, same shape.
        mask: broadcastable to ``pred``; bool or real.
        weight: in [0, 1].
    """
    real = pred.real.dtype
    a = weight * mask.to(real)
    blend = (1 - a) * pred + a * measured
    return torch.where(a == 1, measured, torch.where(a == 0, pred, blend))


def _scheduler_step(
    kind: str,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    noise: torch.Tensor | None,
    sqrt_alpha_prod_t: float,
    sqrt_beta_prod_t: float,
    coeff_x0: float,
    coeff_second: float,
    noise_std: float,
    prediction_type: str,
    clip_sample: bool,
    clip_sample_range: float,
    threshold: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared twin of ddpm_step (kind "ddpm") and ddim_step ("ddim", "ddim_clipped").

    One eager op per rounding, in diffusers' order; bfloat16 is computed in float32 and rounded
    once at the end, like the kernel.
    """
    dtype = sample.dtype
    compute = torch.float32 if dtype == torch.bfloat16 else dtype
    m, s = model_output.to(compute), sample.to(compute)
    sa, sb = sqrt_alpha_prod_t, sqrt_beta_prod_t
    if prediction_type == "epsilon":
        x0 = (s - sb * m) / sa
        eps = m
    elif prediction_type == "sample":
        x0 = m
        eps = (s - sa * x0) / sb
    elif prediction_type == "v_prediction":
        x0 = sa * s - sb * m
        eps = sa * m + sb * s
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    if threshold is not None:
        lim = threshold.to(compute).reshape(-1, *([1] * (sample.dim() - 1)))
        x0 = torch.clamp(x0, -lim, lim) / lim
    elif clip_sample:
        x0 = x0.clamp(-clip_sample_range, clip_sample_range)
    if kind == "ddim_clipped":
        eps = (s - sa * x0) / sb
    prev = coeff_x0 * x0 + coeff_second * (s if kind == "ddpm" else eps)
    if noise is not None:
        prev = prev + noise_std * noise.to(compute)
    return prev.to(dtype), x0.to(dtype)


def ddpm_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    noise: torch.Tensor | None,
    sqrt_alpha_prod_t: float,
    sqrt_beta_prod_t: float,
    pred_original_sample_coeff: float,
    current_sample_coeff: float,
    noise_std: float,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    threshold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of ``kldm::ddpm_step``: ``prev = c0 * x0 + cs * sample + noise_std * noise``.

    Args and returns as :func:`kspace_ldm.ops.ddpm_step`.
    """
    return _scheduler_step(
        "ddpm",
        model_output,
        sample,
        noise,
        sqrt_alpha_prod_t,
        sqrt_beta_prod_t,
        pred_original_sample_coeff,
        current_sample_coeff,
        noise_std,
        prediction_type,
        clip_sample,
        clip_sample_range,
        threshold,
    )


def ddim_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    noise: torch.Tensor | None,
    sqrt_alpha_prod_t: float,
    sqrt_beta_prod_t: float,
    sqrt_alpha_prod_t_prev: float,
    direction_coeff: float,
    noise_std: float,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    use_clipped_model_output: bool = False,
    threshold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of ``kldm::ddim_step``: ``prev = sqrt(a_p) x0 + direction_coeff * eps + std * noise``.

    Args and returns as :func:`kspace_ldm.ops.ddim_step`.
    """
    return _scheduler_step(
        "ddim_clipped" if use_clipped_model_output else "ddim",
        model_output,
        sample,
        noise,
        sqrt_alpha_prod_t,
        sqrt_beta_prod_t,
        sqrt_alpha_prod_t_prev,
        direction_coeff,
        noise_std,
        prediction_type,
        clip_sample,
        clip_sample_range,
        threshold,
    )


def dc_residual(
    pred: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guidance residual ``r = mask * (pred - measured)`` and ``sq_norm = sum |r|^2`` per sample.

    Args:
        pred, measured: ``[..., H, W]`` complex, same shape.
        mask: broadcastable to ``pred``; bool or real.

    Returns:
        ``r`` (``pred``'s shape and dtype) and ``sq_norm`` in the real dtype, summed over every dim
        but the first (``[B]``; ``[]`` for a 2-D input). The squares of ``r``'s parts are summed in
        float64 and rounded once, like the kernel.
    """
    real = pred.real.dtype
    r = mask.to(real) * (pred - measured)
    parts = torch.view_as_real(r).to(torch.float64).square()
    if r.dim() >= 3:
        sq = parts.sum(dim=tuple(range(1, parts.dim())))
    else:
        sq = parts.sum()
    return r, sq.to(real)


def _complex_to_channels(kspace: torch.Tensor) -> torch.Tensor:
    # [B, C, H, W] complex -> [B, 2C, H, W] real, channels [re0, im0, re1, im1, ...] (the layout of
    # kspace_ldm.physics.transforms.complex_to_channels).
    return torch.view_as_real(kspace).movedim(-1, 2).flatten(1, 2)


def kspace_normalize(
    kspace: torch.Tensor,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, C, H, W]`` complex -> ``(x [B, 2C, H, W], mean [B, 2C, 1, 1], std [B, 2C, 1, 1])``.

    ``x = (channel - mean) / std`` per sample and real channel; without given statistics ``mean``
    and ``std`` (unbiased, as ``torch.std``) are taken over H*W. ``std <= eps`` is replaced by 1
    (constant channel: centred only) and the std returned is the divisor used.
    """
    x = _complex_to_channels(kspace)
    B, C2 = x.shape[:2]
    if mean is None:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True)
    else:
        mean = mean.expand(B, C2, 1, 1).clone()
        std = std.expand(B, C2, 1, 1).clone()
    std = torch.where(std <= eps, torch.ones_like(std), std)
    return (x - mean) / std, mean, std


def kspace_denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`kspace_normalize`: ``x * std + mean`` as ``[B, C, H, W]`` complex."""
    y = x * std + mean
    B, C2, H, W = y.shape
    return torch.view_as_complex(y.reshape(B, C2 // 2, 2, H, W).movedim(2, -1).contiguous())


# fft2c / ifft2c and the SENSE pair: the physics layer's pure-PyTorch definitions are the twins.
from kspace_ldm.physics.coils import rss as _rss  # noqa: E402
from kspace_ldm.physics.coils import sense_adjoint, sense_forward  # noqa: E402,F401
from kspace_ldm.physics.fft import fft2c, ifft2c  # noqa: E402,F401


def rss(coil_images: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum_c |x_c|^2)`` over the coil dim -3: ``[..., C, H, W]`` -> ``[..., H, W]`` real."""
    return _rss(coil_images, dim=-3)
