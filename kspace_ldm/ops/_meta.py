"""Fake (meta) kernels and autograd formulas of the ``kldm`` ops.

The C++ library names this module with ``set_python_module``: torch imports it when it first needs a
fake kernel (``torch.export``, ``torch.compile``, ``opcheck``).
"""

from __future__ import annotations

import torch


def _check_pred_measured_fake(op, pred, measured):
    torch._check(pred.is_complex(), lambda: f"{op}: pred must be complex, got {pred.dtype}")
    torch._check(
        measured.shape == pred.shape,
        lambda: f"{op}: measured shape {tuple(measured.shape)} != pred {tuple(pred.shape)}",
    )
    torch._check(
        measured.dtype == pred.dtype,
        lambda: f"{op}: measured must have pred's dtype {pred.dtype}",
    )


@torch.library.register_fake("kldm::dc_project")
def _dc_project_fake(pred, measured, mask, weight=1.0):
    _check_pred_measured_fake("dc_project", pred, measured)
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


# --- dc_residual ---------------------------------------------------------------------------------


@torch.library.register_fake("kldm::dc_residual")
def _dc_residual_fake(pred, measured, mask):
    _check_pred_measured_fake("dc_residual", pred, measured)
    torch._check(pred.dim() >= 2, lambda: "dc_residual: pred must be [..., H, W]")
    torch._check(1 <= mask.dim() <= pred.dim(), lambda: "dc_residual: mask rank")
    r = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)
    norm_shape = pred.shape[:1] if pred.dim() >= 3 else ()
    sq_norm = torch.empty(norm_shape, dtype=pred.dtype.to_real(), device=pred.device)
    return r, sq_norm


def _dc_residual_setup(ctx, inputs, output):
    _, _, mask = inputs
    ctx.save_for_backward(mask, output[0])


def _dc_residual_backward(ctx, grad_r, grad_sq):
    # r = m (p - q) is linear with a real coefficient, so its vector-Jacobian product is m grad_r.
    # sq = sum |r|^2 is real: PyTorch's gradient for a complex input is dL/dRe + i dL/dIm, which for
    # |r|^2 is 2 r, so grad_sq contributes 2 grad_sq m r (broadcast over the summed dims). measured
    # enters with the opposite sign.
    mask, r = ctx.saved_tensors
    g = None
    if grad_r is not None:
        g = grad_r
    if grad_sq is not None:
        gs = grad_sq.reshape(grad_sq.shape + (1,) * (r.dim() - grad_sq.dim()))
        term = 2 * gs * r
        g = term if g is None else g + term
    if g is None:
        return None, None, None
    g = mask.to(r.dtype.to_real()) * g
    grad_pred = g if ctx.needs_input_grad[0] else None
    grad_meas = -g if ctx.needs_input_grad[1] else None
    return grad_pred, grad_meas, None


torch.library.register_autograd(
    "kldm::dc_residual", _dc_residual_backward, setup_context=_dc_residual_setup
)


# --- kspace_normalize / kspace_denormalize ------------------------------------------------------


def _complex_to_channels(z):
    # [B, C, H, W] complex -> [B, 2C, H, W] real, channels [re0, im0, re1, im1, ...].
    return torch.view_as_real(z.resolve_conj()).movedim(-1, 2).flatten(1, 2)


def _channels_to_complex(x):
    # Inverse of _complex_to_channels.
    B, C2, H, W = x.shape
    return torch.view_as_complex(x.reshape(B, C2 // 2, 2, H, W).movedim(2, -1).contiguous())


def _check_stat_fake(op, name, stat, dtype, batch, channels2):
    torch._check(stat.dtype == dtype, lambda: f"{op}: {name} must be {dtype}, got {stat.dtype}")
    torch._check(stat.dim() <= 4, lambda: f"{op}: {name} must broadcast to [B, 2C, 1, 1]")
    target = (batch, channels2, 1, 1)
    for i in range(1, stat.dim() + 1):
        size = stat.shape[-i]
        torch._check(
            size == 1 or size == target[-i],
            lambda: f"{op}: {name} shape {tuple(stat.shape)} does not broadcast to [B, 2C, 1, 1]",
        )


@torch.library.register_fake("kldm::kspace_normalize")
def _kspace_normalize_fake(kspace, mean=None, std=None, eps=1e-12):
    op = "kspace_normalize"
    torch._check(kspace.is_complex(), lambda: f"{op}: kspace must be complex, got {kspace.dtype}")
    torch._check(kspace.dim() == 4, lambda: f"{op}: kspace must be [B, C, H, W]")
    torch._check((mean is None) == (std is None), lambda: f"{op}: mean and std go together")
    B, C, H, W = kspace.shape
    real = kspace.dtype.to_real()
    if mean is not None:
        _check_stat_fake(op, "mean", mean, real, B, 2 * C)
        _check_stat_fake(op, "std", std, real, B, 2 * C)
    out = torch.empty((B, 2 * C, H, W), dtype=real, device=kspace.device)
    stat = torch.empty((B, 2 * C, 1, 1), dtype=real, device=kspace.device)
    return out, stat, torch.empty_like(stat)


def _kspace_normalize_setup(ctx, inputs, output):
    _, mean, std, eps = inputs
    y, _, s = output
    ctx.given = mean is not None
    ctx.eps = eps
    if ctx.given:
        ctx.mean_shape, ctx.std_shape = mean.shape, std.shape
        ctx.save_for_backward(y, s, std)
    else:
        ctx.save_for_backward(y, s)


def _kspace_normalize_backward(ctx, gy, gmean, gstd):
    # Per real channel: y = (x - mu) / s with s = std, or 1 where std <= eps (then s is constant).
    y, s = ctx.saved_tensors[:2]
    gy = torch.zeros_like(y) if gy is None else gy
    gmean = torch.zeros_like(s) if gmean is None else gmean
    gstd = torch.zeros_like(s) if gstd is None else gstd
    gyy = (gy * y).sum(dim=(-2, -1), keepdim=True)  # sum gy * y over H, W
    grad_k = grad_mean = grad_std = None
    if ctx.given:
        # mu and s are inputs: dy/dx = 1/s, dy/dmu = -1/s, dy/ds = -y/s (where s is not clamped).
        std_in = ctx.saved_tensors[2]
        if ctx.needs_input_grad[0]:
            grad_k = _channels_to_complex(gy / s)
        if ctx.needs_input_grad[1]:
            gm = gmean - gy.sum(dim=(-2, -1), keepdim=True) / s
            grad_mean = gm.sum_to_size(ctx.mean_shape)
        if ctx.needs_input_grad[2]:
            live = std_in.expand_as(s) > ctx.eps
            gs = torch.where(live, gstd - gyy / s, torch.zeros_like(s))
            grad_std = gs.sum_to_size(ctx.std_shape)
        return grad_k, grad_mean, grad_std, None
    if ctx.needs_input_grad[0]:
        # Computed statistics (n = H*W): dmu/dx_k = 1/n and, with sigma = sqrt(sum (x - mu)^2 /
        # (n - 1)), dsigma/dx_k = (x_k - mu) / ((n - 1) sigma) = y_k / (n - 1). Hence
        #   dL/dx_k = (gy_k - sum gy / n) / s + gmu / n + (gs - sum gy y / s) y_k / (n - 1),
        # the last term only where s = sigma. A clamped channel has s == 1 and, as y = x - mu
        # there, sum y^2 = (n - 1) sigma^2 <= (n - 1) eps^2, which tells it from sigma == 1.
        n = y.shape[-1] * y.shape[-2]
        live = (s != 1) | (y.square().sum(dim=(-2, -1), keepdim=True) > (n - 1) * ctx.eps**2)
        coef = torch.where(live, gstd - gyy / s, torch.zeros_like(s))
        gsum = gy.sum(dim=(-2, -1), keepdim=True)
        gx = (gy - gsum / n) / s + gmean / n + coef * y / (n - 1)
        grad_k = _channels_to_complex(gx)
    return grad_k, None, None, None


torch.library.register_autograd(
    "kldm::kspace_normalize", _kspace_normalize_backward, setup_context=_kspace_normalize_setup
)


@torch.library.register_fake("kldm::kspace_denormalize")
def _kspace_denormalize_fake(x, mean, std):
    op = "kspace_denormalize"
    torch._check(
        x.dtype in (torch.float32, torch.float64),
        lambda: f"{op}: x must be float32 or float64, got {x.dtype}",
    )
    torch._check(x.dim() == 4, lambda: f"{op}: x must be [B, 2C, H, W]")
    B, C2, H, W = x.shape
    torch._check(C2 % 2 == 0, lambda: f"{op}: x must have an even channel count")
    _check_stat_fake(op, "mean", mean, x.dtype, B, C2)
    _check_stat_fake(op, "std", std, x.dtype, B, C2)
    return torch.empty((B, C2 // 2, H, W), dtype=x.dtype.to_complex(), device=x.device)


def _kspace_denormalize_setup(ctx, inputs, output):
    x, mean, std = inputs
    ctx.mean_shape, ctx.std_shape = mean.shape, std.shape
    ctx.save_for_backward(x, std)


def _kspace_denormalize_backward(ctx, grad):
    # z = channels_to_complex(x * std + mean): a real-to-complex map, so the gradient of each real
    # channel is the matching part of grad (PyTorch's dL/dRe + i dL/dIm convention).
    x, std = ctx.saved_tensors
    g = _complex_to_channels(grad)
    grad_x = g * std if ctx.needs_input_grad[0] else None
    grad_mean = g.sum_to_size(ctx.mean_shape) if ctx.needs_input_grad[1] else None
    grad_std = (g * x).sum_to_size(ctx.std_shape) if ctx.needs_input_grad[2] else None
    return grad_x, grad_mean, grad_std


torch.library.register_autograd(
    "kldm::kspace_denormalize",
    _kspace_denormalize_backward,
    setup_context=_kspace_denormalize_setup,
)
# ---------------------------------------------------------------------------------------------
# fft2c / ifft2c, sense_forward / sense_adjoint, rss
# ---------------------------------------------------------------------------------------------


def _check_fft2c_fake(x, op):
    torch._check(x.is_complex(), lambda: f"{op}: x must be complex64 or complex128, got {x.dtype}")
    torch._check(2 <= x.dim() <= 10, lambda: f"{op}: x must be [..., H, W], got {tuple(x.shape)}")


@torch.library.register_fake("kldm::fft2c")
def _fft2c_fake(x):
    _check_fft2c_fake(x, "fft2c")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@torch.library.register_fake("kldm::ifft2c")
def _ifft2c_fake(x):
    _check_fft2c_fake(x, "ifft2c")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _fft2c_backward(ctx, grad):
    # fft2c is unitary, so its vector-Jacobian product is the adjoint, i.e. the inverse, applied to
    # grad (and vice versa). Using the ops themselves keeps double backward differentiable.
    return torch.ops.kldm.ifft2c(grad)


def _ifft2c_backward(ctx, grad):
    return torch.ops.kldm.fft2c(grad)


torch.library.register_autograd("kldm::fft2c", _fft2c_backward)
torch.library.register_autograd("kldm::ifft2c", _ifft2c_backward)


def _check_sense_fake(x, maps, op, name, coils):
    torch._check(maps.is_complex() and maps.dim() == 4, lambda: f"{op}: maps must be [B, C, H, W]")
    torch._check(x.dtype == maps.dtype, lambda: f"{op}: {name} dtype differs from maps dtype")
    c = maps.shape[1] if coils else 1
    torch._check(
        x.dim() == 4 and x.shape[1:] == (c, *maps.shape[2:]),
        lambda: f"{op}: {name} shape {tuple(x.shape)} does not match maps {tuple(maps.shape)}",
    )
    torch._check(
        maps.shape[0] == 1 or maps.shape[0] == x.shape[0],
        lambda: f"{op}: {name} batch does not match maps batch",
    )


@torch.library.register_fake("kldm::sense_forward")
def _sense_forward_fake(image, maps, mask=None):
    image4 = image.unsqueeze(1) if image.dim() == 3 else image
    _check_sense_fake(image4, maps, "sense_forward", "image", coils=False)
    return maps.new_empty((image4.shape[0], *maps.shape[1:]))


@torch.library.register_fake("kldm::sense_adjoint")
def _sense_adjoint_fake(kspace, maps, mask=None):
    _check_sense_fake(kspace, maps, "sense_adjoint", "kspace", coils=True)
    return maps.new_empty((kspace.shape[0], 1, *kspace.shape[2:]))


def _real_mask(mask, like):
    """The mask as a real tensor of ``like``'s real dtype, broadcastable to ``like [B, C, H, W]``
    (1-D and 2-D masks broadcast from the right, 4-D ones dim by dim)."""
    return mask.to(like.real.dtype)


def _maps_grad(coil_grads, maps):
    # Maps shared by the batch ([1, C, H, W]) receive the sum of the per-sample gradients.
    if maps.shape[0] == 1 and coil_grads.shape[0] != 1:
        return coil_grads.sum(dim=0, keepdim=True)
    return coil_grads


def _sense_setup(ctx, inputs, output):
    x, maps, mask = inputs
    ctx.save_for_backward(x, maps, mask)


def _sense_forward_backward(ctx, grad):
    # A x = M F(S x) with F = fft2c unitary and M real, so A^H g = sum_c conj(S_c) F^H(M g_c):
    # the image gradient is sense_adjoint(grad). For the maps, y_c = M F(S_c x) is linear in S_c
    # with coefficient x: grad_S_c = conj(x) * ifft2c(M g_c).
    image, maps, mask = ctx.saved_tensors
    grad_image = grad_maps = None
    if ctx.needs_input_grad[0]:
        grad_image = torch.ops.kldm.sense_adjoint(grad, maps, mask)
        if image.dim() == 3:
            grad_image = grad_image.squeeze(1)
    if ctx.needs_input_grad[1]:
        g = grad if mask is None else grad * _real_mask(mask, grad)
        image4 = image.unsqueeze(1) if image.dim() == 3 else image
        grad_maps = _maps_grad(image4.conj() * torch.ops.kldm.ifft2c(g), maps)
    return grad_image, grad_maps, None


def _sense_adjoint_backward(ctx, grad):
    # x = sum_c conj(S_c) F^H(M y_c): the k-space gradient is A grad = sense_forward(grad). x is
    # linear in conj(S_c) with coefficient z_c = F^H(M y_c), so grad_S_c = conj(grad) * z_c.
    kspace, maps, mask = ctx.saved_tensors
    grad_kspace = grad_maps = None
    if ctx.needs_input_grad[0]:
        grad_kspace = torch.ops.kldm.sense_forward(grad, maps, mask)
    if ctx.needs_input_grad[1]:
        y = kspace if mask is None else kspace * _real_mask(mask, kspace)
        grad_maps = _maps_grad(grad.conj() * torch.ops.kldm.ifft2c(y), maps)
    return grad_kspace, grad_maps, None


torch.library.register_autograd(
    "kldm::sense_forward", _sense_forward_backward, setup_context=_sense_setup
)
torch.library.register_autograd(
    "kldm::sense_adjoint", _sense_adjoint_backward, setup_context=_sense_setup
)


@torch.library.register_fake("kldm::rss")
def _rss_fake(coil_images):
    x = coil_images
    torch._check(
        x.is_complex() or x.is_floating_point(),
        lambda: f"rss: coil_images must be real or complex floating point, got {x.dtype}",
    )
    torch._check(3 <= x.dim() <= 11, lambda: "rss: coil_images must be [..., C, H, W]")
    real = x.real.dtype if x.is_complex() else x.dtype
    return torch.empty((*x.shape[:-3], *x.shape[-2:]), dtype=real, device=x.device)


def _rss_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _rss_backward(ctx, grad):
    # d sqrt(sum |x|^2) = x / rss (for complex x in PyTorch's convention too), set to 0 where
    # rss == 0, as the twin (torch.linalg.vector_norm) does. The division happens only where
    # rss != 0 (safe denominator), so double backward does not meet 0 * inf either.
    x, out = ctx.saved_tensors
    zero = out == 0
    scale = torch.where(zero, torch.zeros_like(grad), grad / torch.where(zero, 1, out))
    return x * scale.unsqueeze(-3)


torch.library.register_autograd("kldm::rss", _rss_backward, setup_context=_rss_setup)
