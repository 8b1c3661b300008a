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


# fft2c / ifft2c and the SENSE pair: the physics layer's pure-PyTorch definitions are the twins.
from kspace_ldm.physics.coils import rss as _rss  # noqa: E402
from kspace_ldm.physics.coils import sense_adjoint, sense_forward  # noqa: E402,F401
from kspace_ldm.physics.fft import fft2c, ifft2c  # noqa: E402,F401


def rss(coil_images: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum_c |x_c|^2)`` over the coil dim -3: ``[..., C, H, W]`` -> ``[..., H, W]`` real."""
    return _rss(coil_images, dim=-3)
