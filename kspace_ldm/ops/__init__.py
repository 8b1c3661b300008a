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
