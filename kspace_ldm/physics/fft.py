"""Centred, orthonormal 2-D Fourier transforms over the last two dimensions.

These are the pure-PyTorch definitions (fastMRI's convention: ``ifftshift -> fft2(norm="ortho") ->
fftshift``). They work on any device and dtype PyTorch's FFT supports, are differentiable, and are
the reference that the fused ``kldm::fft2c`` kernels are tested against.
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT: image -> k-space.

    Args:
        image: ``[..., H, W]`` complex tensor (image domain, centre of the field of view at
            ``(H // 2, W // 2)``).

    Returns:
        ``[..., H, W]`` complex k-space, DC component at ``(H // 2, W // 2)``.
    """
    _check_complex(image, "image")
    x = torch.fft.ifftshift(image, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT: k-space -> image. Exact inverse of :func:`fft2c`.

    Args:
        kspace: ``[..., H, W]`` complex tensor, DC component at ``(H // 2, W // 2)``.

    Returns:
        ``[..., H, W]`` complex image.
    """
    _check_complex(kspace, "kspace")
    x = torch.fft.ifftshift(kspace, dim=_DIMS)
    x = torch.fft.ifft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def _check_complex(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(f"{name} must be complex ([..., H, W] complex64/128), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have at least 2 dims [..., H, W], got shape {tuple(x.shape)}"
        )
