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


# ---- kldm::ddpm_step / kldm::ddim_step -----------------------------------------------------------
# Sampling steps only: no autograd formula is registered (nothing backpropagates through a sampler
# update here; guidance differentiates the model, not the scheduler), so they are used under
# no_grad / inference_mode or on tensors that do not require grad.


def _scheduler_step_fake(op, model_output, sample, noise, threshold, clip_sample):
    torch._check(
        sample.dtype in (torch.float32, torch.float64, torch.bfloat16),
        lambda: f"{op}: sample must be float32, float64 or bfloat16, got {sample.dtype}",
    )
    for name, t in (("model_output", model_output), ("noise", noise)):
        if t is None:
            continue
        torch._check(t.dtype == sample.dtype, lambda n=name: f"{op}: {n} must have sample's dtype")
        torch._check(
            t.shape == sample.shape,
            lambda n=name, t=t: f"{op}: {n} shape {tuple(t.shape)} != sample {tuple(sample.shape)}",
        )
    if threshold is not None:
        torch._check(not clip_sample, lambda: f"{op}: clip_sample and threshold are exclusive")
        torch._check(
            sample.dim() >= 1 and threshold.shape == (sample.shape[0],),
            lambda: f"{op}: threshold must have shape [B]",
        )
    out = torch.empty(sample.shape, dtype=sample.dtype, device=sample.device)
    return out, torch.empty_like(out)


@torch.library.register_fake("kldm::ddpm_step")
def _ddpm_step_fake(
    model_output,
    sample,
    noise,
    sqrt_alpha_prod_t,
    sqrt_beta_prod_t,
    pred_original_sample_coeff,
    current_sample_coeff,
    noise_std,
    prediction_type="epsilon",
    clip_sample=False,
    clip_sample_range=1.0,
    threshold=None,
):
    return _scheduler_step_fake("ddpm_step", model_output, sample, noise, threshold, clip_sample)


@torch.library.register_fake("kldm::ddim_step")
def _ddim_step_fake(
    model_output,
    sample,
    noise,
    sqrt_alpha_prod_t,
    sqrt_beta_prod_t,
    sqrt_alpha_prod_t_prev,
    direction_coeff,
    noise_std,
    prediction_type="epsilon",
    clip_sample=False,
    clip_sample_range=1.0,
    use_clipped_model_output=False,
    threshold=None,
):
    return _scheduler_step_fake("ddim_step", model_output, sample, noise, threshold, clip_sample)
