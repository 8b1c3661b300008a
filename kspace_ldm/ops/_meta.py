"""Fake (meta) kernels and autograd formulas of the ``kldm`` ops.

The C++ library names this module with ``set_python_module``: torch imports it when it first needs a
fake kernel (``torch.export``, ``torch.compile``, ``opcheck``).
"""

from __future__ import annotations

import torch


@torch.library.register_fake("kldm::dc_project")
def _dc_project_fake(pred, measured, mask, weight=1.0):
    torch._check(pred.is_complex(), lambda: f"dc_project: pred must be complex, got {pred.dtype}")
    torch._check(
        measured.shape == pred.shape,
        lambda: f"dc_project: measured shape {tuple(measured.shape)} != pred {tuple(pred.shape)}",
    )
    torch._check(
        measured.dtype == pred.dtype,
        lambda: f"dc_project: measured must have pred's dtype {pred.dtype}",
    )
    torch._check(1 <= mask.dim() <= pred.dim(), lambda: "dc_project: mask rank")
    return torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)


def _dc_project_setup(ctx, inputs, output):
    _, _, mask, weight = inputs
    ctx.save_for_backward(mask)
    ctx.weight = weight


def _dc_project_backward(ctx, grad):
    # The op is linear in (pred, measured) with real coefficients (1 - a) and a, so the gradient
    # of each input is the same blend applied to grad: pred gets (1 - a) grad, measured gets a grad.
    (mask,) = ctx.saved_tensors
    zeros = torch.zeros_like(grad)
    grad_pred = grad_meas = None
    if ctx.needs_input_grad[0]:
        grad_pred = torch.ops.kldm.dc_project(grad, zeros, mask, ctx.weight)
    if ctx.needs_input_grad[1]:
        grad_meas = torch.ops.kldm.dc_project(zeros, grad, mask, ctx.weight)
    return grad_pred, grad_meas, None, None


torch.library.register_autograd(
    "kldm::dc_project", _dc_project_backward, setup_context=_dc_project_setup
)
