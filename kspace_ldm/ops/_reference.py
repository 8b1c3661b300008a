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
