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
}
