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
