// SPDX-License-Identifier: MIT
// dc_residual internals shared by the CPU kernel (dc_residual.cpp) and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>

#include "dc_project.h"
#include "dc_residual_math.h"

namespace kldm::detail {

// Validates pred, measured and mask (dtype, device, rank, shapes) with messages that name the
// argument and its shape; throws c10::Error (ValueError/TypeError in Python) on bad input.
void check_dc_residual_args(const at::Tensor& pred, const at::Tensor& measured,
                            const at::Tensor& mask);

// dc_residual's operands after the checks (on CUDA under the device guard), shared by the CPU and
// CUDA paths: those of the masked k-space ops, the layout of the contiguous pred [samples,
// rows_per_sample, H, W] with the mask's broadcast strides, and the squared norm per sample ([B],
// B = pred.size(0), for rank >= 3; [] for a 2-D input), zero when pred is empty (an empty sum).
struct DcResidualIO : MaskedKspaceIO {
  DcResidualLayout L;
  at::Tensor sq_norm;
};
DcResidualIO prepare_dc_residual(const at::Tensor& pred, const at::Tensor& measured,
                                 const at::Tensor& mask);

}  // namespace kldm::detail
