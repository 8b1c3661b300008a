// SPDX-License-Identifier: MIT
// kspace_normalize / kspace_denormalize internals shared by the CPU kernels and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "kspace_normalize_math.h"

namespace kldm::detail {

// Validate the arguments with messages naming the argument and its shape (TypeError/ValueError).
void check_kspace_normalize_args(const at::Tensor& kspace, const std::optional<at::Tensor>& mean,
                                 const std::optional<at::Tensor>& stddev, double eps);
void check_kspace_denormalize_args(const at::Tensor& x, const at::Tensor& mean,
                                   const at::Tensor& stddev);

// A statistic given by the caller, broadcast and copied to a fresh contiguous [B, 2C, 1, 1] tensor
// (outputs must not alias inputs).
at::Tensor expand_stat(const at::Tensor& stat, int64_t batch, int64_t channels2);

NormalizeLayout normalize_layout(int64_t batch, int64_t coils, int64_t H, int64_t W);

}  // namespace kldm::detail
