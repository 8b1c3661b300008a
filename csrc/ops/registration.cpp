// SPDX-License-Identifier: MIT
// The one place where every kldm op schema is defined. Kernels register per backend in their own
// files (TORCH_LIBRARY_IMPL); fake (meta) kernels and autograd formulas live in Python, in
// kspace_ldm.ops._meta, which torch imports when it first needs them (set_python_module).
#include <torch/library.h>

TORCH_LIBRARY(kldm, m) {
  m.set_python_module("kspace_ldm.ops._meta");
  // pred, measured: [..., H, W] complex; mask broadcastable to pred; out = (1-a) pred + a measured,
  // a = weight * mask.
  m.def("dc_project(Tensor pred, Tensor measured, Tensor mask, float weight=1.0) -> Tensor");
  // Centred orthonormal 2-D FFTs over the last two dims of [..., H, W] complex (fftshift(fft2(
  // ifftshift(x))) and its inverse), centring applied as phase modulations (docs/fft_centering.md).
  m.def("fft2c(Tensor x) -> Tensor");
  m.def("ifft2c(Tensor x) -> Tensor");
  // SENSE pair: image [B, 1, H, W] or [B, H, W], maps [B|1, C, H, W], mask ([W], [H, W] or 4-D,
  // bool or real) -> mask * fft2c(maps * image) [B, C, H, W], and its adjoint
  // sum_c conj(maps_c) * ifft2c(mask * kspace_c) [B, 1, H, W].
  m.def("sense_forward(Tensor image, Tensor maps, Tensor? mask=None) -> Tensor");
  m.def("sense_adjoint(Tensor kspace, Tensor maps, Tensor? mask=None) -> Tensor");
  // Root-sum-of-squares over the coil dim -3: [..., C, H, W] real or complex -> [..., H, W] real.
  m.def("rss(Tensor coil_images) -> Tensor");
}
