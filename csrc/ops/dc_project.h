// SPDX-License-Identifier: MIT
// dc_project internals shared by the CPU kernel (dc_project.cpp) and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>

#include "dc_project_layout.h"

namespace kldm::detail {

// Checks shared by the masked k-space ops (dc_project, dc_residual): pred/measured complex, same
// dtype, shape and device, [..., H, W] with at most kMaxLeadingDims leading dims; mask bool or
// real, broadcastable to pred, on pred's device. Messages start with `op`.
void check_masked_kspace_args(const char* op, const at::Tensor& pred, const at::Tensor& measured,
                              const at::Tensor& mask);

// Validates the arguments (dtype, device, rank, shapes, weight) with messages that name the
// argument and its shape; throws c10::Error (ValueError/TypeError in Python) on bad input.
void check_dc_project_args(const at::Tensor& pred, const at::Tensor& measured,
                           const at::Tensor& mask, double weight);

// Mask as the kernel reads it: bool kept as bool (1 byte per read), any other dtype converted to
// pred's real value type; on pred's device.
at::Tensor dc_project_mask(const at::Tensor& pred, const at::Tensor& mask);

// Layout of pred [rows, H, W] and of the mask's broadcast strides.
DcProjectLayout dc_project_layout(const at::Tensor& pred, const at::Tensor& mask);

// The operands of the masked k-space ops (dc_project, dc_residual) after the checks (on CUDA under
// the device guard), shared by the CPU and CUDA paths.
struct MaskedKspaceIO {
  at::Tensor pred;      // contiguous
  at::Tensor measured;  // contiguous
  at::Tensor mask;      // dc_project_mask(pred, mask)
  at::Tensor out;       // contiguous, like pred, uninitialised
};
MaskedKspaceIO prepare_masked_kspace(const at::Tensor& pred, const at::Tensor& measured,
                                     const at::Tensor& mask);

}  // namespace kldm::detail
