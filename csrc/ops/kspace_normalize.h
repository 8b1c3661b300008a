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

// kspace_normalize's operands, shared by the CPU and CUDA paths (after the checks; on CUDA under
// the device guard): the contiguous input and the fresh outputs the kernels write.
struct KspaceNormalizeIO {
  at::Tensor kspace;  // contiguous complex [B, C, H, W]
  at::Tensor out;     // real [B, 2C, H, W], uninitialised
  // [B, 2C, 1, 1]: the caller's statistics broadcast and copied (outputs must not alias inputs),
  // or uninitialised for the statistics pass to fill.
  at::Tensor mean;
  at::Tensor stddev;
  bool given = false;  // mean and std given by the caller
  NormalizeLayout L;
};
KspaceNormalizeIO prepare_kspace_normalize(const at::Tensor& kspace,
                                           const std::optional<at::Tensor>& mean,
                                           const std::optional<at::Tensor>& stddev);

// kspace_denormalize's operands, likewise.
struct KspaceDenormalizeIO {
  at::Tensor x;       // contiguous real [B, 2C, H, W]
  at::Tensor mean;    // tiny [B, 2C, 1, 1] copies: the kernels read one value per channel at a
  at::Tensor stddev;  // fixed index
  at::Tensor out;     // complex [B, C, H, W], uninitialised
  NormalizeLayout L;
};
KspaceDenormalizeIO prepare_kspace_denormalize(const at::Tensor& x, const at::Tensor& mean,
                                               const at::Tensor& stddev);

}  // namespace kldm::detail
