"""The compiled k-space ops (``torch.ops.kldm.*``) with their Python entry points.

Importing this module loads ``libkldm`` (through :mod:`kspace_ldm._C`), which registers the CPU
(and, when compiled in, CUDA) kernels; :mod:`kspace_ldm.ops._meta` adds fake kernels and autograd.
Every op has a pure-PyTorch twin in :mod:`kspace_ldm.ops._reference` that the tests compare against.
"""

from __future__ import annotations

import torch

from kspace_ldm.ops._loader import build_info, load_library

load_library()

from kspace_ldm.ops import _meta  # noqa: E402,F401  (fake kernels and autograd registrations)


def dc_project(
    pred: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """Masked data consistency on complex k-space.

    ``out = (1 - a) * pred + a * measured`` with ``a = weight * mask``; where ``a`` is exactly 1 the
    measured sample is copied bit for bit (hard replacement), where it is 0 the prediction is kept.
    ``weight < 1`` gives soft (noise-aware) consistency: for a noise weighting ``lam`` use
    ``weight = lam / (1 + lam)``.

    Args:
        pred: ``[..., H, W]`` complex64/complex128 k-space estimate.
        measured: ``[..., H, W]`` measured k-space, same shape, dtype and device as ``pred``
            (zeros where not sampled).
        mask: broadcastable to ``pred`` — a ``[W]`` column mask, ``[H, W]`` 2-D mask,
            ``[B, 1, 1, W]`` per-sample masks, ... — bool or real (values in [0, 1]).
        weight: consistency weight in ``[0, 1]``.

    Returns:
        ``[..., H, W]`` contiguous tensor of ``pred``'s dtype. Differentiable in ``pred`` and
        ``measured``.
    """
    return torch.ops.kldm.dc_project(pred, measured, mask, float(weight))


__all__ = ["build_info", "dc_project"]


# ---- Fused diffusion sampling steps (kldm::ddpm_step, kldm::ddim_step) ---------------------------


def ddpm_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    noise: torch.Tensor | None = None,
    *,
    sqrt_alpha_prod_t: float,
    sqrt_beta_prod_t: float,
    pred_original_sample_coeff: float,
    current_sample_coeff: float,
    noise_std: float = 0.0,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    threshold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused DDPM step: the element-wise part of diffusers' ``DDPMScheduler.step``.

    With ``a_t = alphas_cumprod[t]`` and ``a_p = alphas_cumprod[prev_t]`` (1 before the start),
    every coefficient computed on the host in the scheduler's float32 precision (see
    :class:`kspace_ldm.sampling.FusedDDPMScheduler`, which does this)::

        x0   = (sample - sqrt(1-a_t) m) / sqrt(a_t)     (epsilon)
             = m                                        (sample)
             = sqrt(a_t) sample - sqrt(1-a_t) m         (v_prediction)
        x0   = clamp(x0, -range, range)                 (clip_sample)
             = clamp(x0, -s_b, s_b) / s_b               (threshold)
        prev = c0 * x0 + cs * sample [+ noise_std * noise]

    Args:
        model_output: ``[B, ...]`` model prediction, float32/float64/bfloat16.
        sample: ``x_t``, same shape, dtype and device as ``model_output``.
        noise: ``N(0, 1)`` noise like ``sample``, or None (no noise term; ``noise_std`` must be 0).
        sqrt_alpha_prod_t: ``sqrt(a_t)``.
        sqrt_beta_prod_t: ``sqrt(1 - a_t)``.
        pred_original_sample_coeff: ``c0 = sqrt(a_p) * beta_t / (1 - a_t)``.
        current_sample_coeff: ``cs = sqrt(a_t / a_p) * (1 - a_p) / (1 - a_t)``.
        noise_std: standard deviation of the added noise (``sqrt(variance)`` for fixed_small).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        clip_sample: clamp ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the clamp bound (>= 0).
        threshold: ``[B]`` per-sample dynamic-thresholding limits ``s_b`` (exclusive with
            ``clip_sample``), or None.

    Returns:
        ``(prev_sample, pred_original_sample)``: contiguous, ``sample``'s shape and dtype.
        float32/float64 follow diffusers op for op; bfloat16 is computed in float32 and rounded
        once. Not differentiable.
    """
    return torch.ops.kldm.ddpm_step(
        model_output,
        sample,
        noise,
        float(sqrt_alpha_prod_t),
        float(sqrt_beta_prod_t),
        float(pred_original_sample_coeff),
        float(current_sample_coeff),
        float(noise_std),
        prediction_type,
        bool(clip_sample),
        float(clip_sample_range),
        threshold,
    )


def ddim_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    noise: torch.Tensor | None = None,
    *,
    sqrt_alpha_prod_t: float,
    sqrt_beta_prod_t: float,
    sqrt_alpha_prod_t_prev: float,
    direction_coeff: float,
    noise_std: float = 0.0,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    use_clipped_model_output: bool = False,
    threshold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused DDIM step: the element-wise part of diffusers' ``DDIMScheduler.step``.

    ``x0`` and the clipping/thresholding as in :func:`ddpm_step`; the predicted noise is
    ``eps = m`` (epsilon), ``(sample - sqrt(a_t) x0) / sqrt(1-a_t)`` (sample) or
    ``sqrt(a_t) m + sqrt(1-a_t) sample`` (v_prediction), re-derived from the clipped ``x0`` with
    ``use_clipped_model_output``; then
    ``prev = sqrt(a_p) x0 + direction_coeff * eps [+ noise_std * noise]``.

    Args:
        model_output: ``[B, ...]`` model prediction, float32/float64/bfloat16.
        sample: ``x_t``, same shape, dtype and device as ``model_output``.
        noise: ``N(0, 1)`` noise like ``sample`` (eta > 0), or None (``noise_std`` must be 0).
        sqrt_alpha_prod_t: ``sqrt(a_t)``.
        sqrt_beta_prod_t: ``sqrt(1 - a_t)``.
        sqrt_alpha_prod_t_prev: ``sqrt(a_p)`` (``a_p`` = ``final_alpha_cumprod`` past the start).
        direction_coeff: ``sqrt(1 - a_p - noise_std**2)``.
        noise_std: ``eta * sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))``.
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        clip_sample: clamp ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the clamp bound (>= 0).
        use_clipped_model_output: re-derive ``eps`` from the clipped ``x0``.
        threshold: ``[B]`` per-sample dynamic-thresholding limits, or None.

    Returns:
        ``(prev_sample, pred_original_sample)``: contiguous, ``sample``'s shape and dtype.
        Not differentiable.
    """
    return torch.ops.kldm.ddim_step(
        model_output,
        sample,
        noise,
        float(sqrt_alpha_prod_t),
        float(sqrt_beta_prod_t),
        float(sqrt_alpha_prod_t_prev),
        float(direction_coeff),
        float(noise_std),
        prediction_type,
        bool(clip_sample),
        float(clip_sample_range),
        bool(use_clipped_model_output),
        threshold,
    )


__all__ += ["ddim_step", "ddpm_step"]


def dc_residual(
    pred: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guidance residual and its squared norm, in one pass over the data.

    ``r = mask * (pred - measured)`` and ``sq_norm = sum |r|^2`` over every dim but the first:
    the data-consistency guidance loss. Its gradient w.r.t. ``pred`` is ``2 * mask * r`` (PyTorch's
    convention for complex inputs), w.r.t. ``measured`` the negative.

    Args:
        pred: ``[..., H, W]`` complex64/complex128 k-space estimate (e.g. ``[B, C, H, W]``).
        measured: ``[..., H, W]`` measured k-space, same shape, dtype and device as ``pred``.
        mask: broadcastable to ``pred`` — ``[W]`` column mask, ``[H, W]``, ``[B, 1, 1, W]``,
            full — bool or real.

    Returns:
        ``(r, sq_norm)``: ``r`` is ``[..., H, W]`` of ``pred``'s dtype (contiguous); ``sq_norm``
        is float32 (complex64 input) or float64 (complex128), shape ``[B]`` for inputs of rank
        >= 3 and ``[]`` for a 2-D ``[H, W]`` input. The sum is accumulated in float64 in a fixed
        order (deterministic on CPU and CUDA). Differentiable in ``pred`` and ``measured``.
    """
    return torch.ops.kldm.dc_residual(pred, measured, mask)


def kspace_normalize(
    kspace: torch.Tensor,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Complex k-space to per-sample standardised real channels.

    Channel ``2c`` is the real part of coil ``c`` and ``2c + 1`` its imaginary part (the layout of
    :func:`kspace_ldm.physics.transforms.complex_to_channels`); each channel is standardised,
    ``x = (channel - mean) / std``.

    Args:
        kspace: ``[B, C, H, W]`` complex64/complex128.
        mean, std: optional statistics to use instead of computing them (e.g. dataset-wide values
            known at test time): both or neither, of the real dtype (float32 for complex64,
            float64 for complex128), on ``kspace``'s device, broadcastable to ``[B, 2C, 1, 1]``
            (``[]``, ``[2C, 1, 1]``, ``[1, 2C, 1, 1]``, ``[B, 2C, 1, 1]``, ...).
        eps: a std ``<= eps`` (a constant channel, e.g. an all-zero imaginary part) is replaced by
            1: that channel is centred, not scaled, so rounding noise is never magnified.

    Returns:
        ``(x, mean, std)``: ``x`` ``[B, 2C, H, W]`` real; ``mean`` and ``std`` ``[B, 2C, 1, 1]``
        (ready to broadcast against ``x``). Computed statistics are over H*W per sample and
        channel, std unbiased (``torch.std``), accumulated in float64. Given statistics are
        returned as given (broadcast to ``[B, 2C, 1, 1]``), except a std ``<= eps`` which becomes
        1: the std returned is always the divisor used, so
        :func:`kspace_denormalize` ``(x, mean, std)`` restores ``kspace`` to rounding.
        Differentiable w.r.t. ``kspace`` (through the computed statistics too) and w.r.t. given
        ``mean``/``std``; twice differentiable.
    """
    return torch.ops.kldm.kspace_normalize(kspace, mean, std, float(eps))


def kspace_denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`kspace_normalize`: real channels back to complex k-space.

    Args:
        x: ``[B, 2C, H, W]`` float32/float64, channels ``[re0, im0, re1, im1, ...]``.
        mean, std: of ``x``'s dtype and device, broadcastable to ``[B, 2C, 1, 1]`` (as returned by
            :func:`kspace_normalize`).

    Returns:
        ``x * std + mean`` as ``[B, C, H, W]`` complex64 (float32 input) or complex128 (float64).
        Differentiable w.r.t. ``x``, ``mean`` and ``std``.
    """
    return torch.ops.kldm.kspace_denormalize(x, mean, std)


__all__ += ["dc_residual", "kspace_denormalize", "kspace_normalize"]


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two dims: image -> k-space.

    Equal (to rounding) to ``fftshift(fft2(ifftshift(x), norm="ortho"))`` over dims ``(-2, -1)``,
    :func:`kspace_ldm.physics.fft.fft2c`; the centring is applied as phase modulations fused with
    the FFT's input copy and output (docs/fft_centering.md), so any ``H, W`` (odd or even) works.

    Args:
        x: ``[..., H, W]`` complex64/complex128 (up to 8 leading dims), centre of the field of view
            at ``(H // 2, W // 2)``. Non-contiguous inputs are copied first.

    Returns:
        ``[..., H, W]`` contiguous k-space of ``x``'s dtype, DC at ``(H // 2, W // 2)``.
        Differentiable (the gradient is :func:`ifft2c` of the output gradient: the op is unitary).
    """
    return torch.ops.kldm.fft2c(x)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT over the last two dims: k-space -> image.

    Exact inverse of :func:`fft2c`; equal (to rounding) to
    ``fftshift(ifft2(ifftshift(x), norm="ortho"))``.

    Args:
        x: ``[..., H, W]`` complex64/complex128 k-space, DC at ``(H // 2, W // 2)``.

    Returns:
        ``[..., H, W]`` contiguous image of ``x``'s dtype. Differentiable (gradient:
        :func:`fft2c` of the output gradient).
    """
    return torch.ops.kldm.ifft2c(x)


def sense_forward(
    image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SENSE forward operator ``A x = mask * fft2c(maps * image)``.

    Same conventions as :func:`kspace_ldm.physics.coils.sense_forward` (its pure-PyTorch twin).

    Args:
        image: ``[B, 1, H, W]`` or ``[B, H, W]`` complex64/complex128.
        maps: ``[B, C, H, W]`` coil sensitivities of ``image``'s dtype and device, or
            ``[1, C, H, W]`` shared by the batch.
        mask: optional sampling mask, bool or real: ``[W]`` column mask, ``[H, W]``, or 4-D
            ``[B|1, C|1, H|1, W|1]`` (e.g. ``[B, 1, 1, W]`` per-sample columns). Not 3-D.

    Returns:
        ``[B, C, H, W]`` multi-coil k-space (zero where the mask is zero). Differentiable in
        ``image`` (gradient :func:`sense_adjoint`) and ``maps``.
    """
    return torch.ops.kldm.sense_forward(image, maps, mask)


def sense_adjoint(
    kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Adjoint SENSE operator ``A^H y = sum_c conj(maps_c) * ifft2c(mask * y_c)``.

    ``<sense_forward(x, S, M), y> == <x, sense_adjoint(y, S, M)>`` for real masks.

    Args:
        kspace: ``[B, C, H, W]`` complex64/complex128.
        maps: ``[B, C, H, W]`` or ``[1, C, H, W]``, ``kspace``'s dtype and device.
        mask: optional, same forms as for :func:`sense_forward`.

    Returns:
        ``[B, 1, H, W]`` complex image. Differentiable in ``kspace`` (gradient
        :func:`sense_forward`) and ``maps``.
    """
    return torch.ops.kldm.sense_adjoint(kspace, maps, mask)


def rss(coil_images: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares over the coil dim: ``sqrt(sum_c |x_c|^2)``.

    Args:
        coil_images: ``[B, C, H, W]`` (more generally ``[..., C, H, W]``) complex64/complex128 or
            float32/float64.

    Returns:
        ``[B, H, W]`` (``[..., H, W]``) real tensor: float32 for complex64/float32 input, float64
        for complex128/float64. Differentiable; the gradient is 0 where every coil is 0 (as for
        :func:`kspace_ldm.physics.coils.rss`).
    """
    return torch.ops.kldm.rss(coil_images)


__all__ += ["fft2c", "ifft2c", "rss", "sense_adjoint", "sense_forward"]
