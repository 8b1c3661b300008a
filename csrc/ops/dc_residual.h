// SPDX-License-Identifier: MIT
// dc_residual internals shared by the CPU kernel (dc_residual.cpp) and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>

#include "dc_residual_math.h"

namespace kldm::detail {

// Validates pred, measured and mask (dtype, device, rank, shapes) with messages that name the
// argument and its shape; throws c10::Error (ValueError/TypeError in Python) on bad input.
void check_dc_residual_args(const at::Tensor& pred, const at::Tensor& measured,
                            const at::Tensor& mask);

// Layout of the contiguous pred [samples, rows_per_sample, H, W] and of the mask's broadcast
// strides (mask as returned by dc_project_mask: bool or pred's real type).
DcResidualLayout dc_residual_layout(const at::Tensor& pred, const at::Tensor& mask);

// Shape of the squared norm: [B] (B = pred.size(0)) for rank >= 3, [] for a 2-D input.
std::vector<int64_t> dc_residual_norm_shape(const at::Tensor& pred);

}  // namespace kldm::detail
