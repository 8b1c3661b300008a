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
