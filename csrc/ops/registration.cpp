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
  // pred, measured: [..., H, W] complex; mask as dc_project. Returns (r, sq_norm):
  // r = mask * (pred - measured), sq_norm = sum |r|^2 over every dim but the first ([B]; [] for 2-D).
  m.def("dc_residual(Tensor pred, Tensor measured, Tensor mask) -> (Tensor, Tensor)");
  // kspace: [B, C, H, W] complex -> (x [B, 2C, H, W] real, channels [re0, im0, re1, ...], each
  // standardised per sample; mean, std [B, 2C, 1, 1]). Given mean/std are used instead of computed.
  m.def(
      "kspace_normalize(Tensor kspace, Tensor? mean=None, Tensor? std=None, float eps=1e-12) -> "
      "(Tensor, Tensor, Tensor)");
  // Inverse of kspace_normalize: x [B, 2C, H, W] real -> x * std + mean as [B, C, H, W] complex.
  m.def("kspace_denormalize(Tensor x, Tensor mean, Tensor std) -> Tensor");
}
