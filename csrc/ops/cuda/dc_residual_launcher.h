// SPDX-License-Identifier: MIT
// Plain launcher of the dc_residual CUDA kernels (no torch types), called by dc_residual_cuda.cpp.
// Complex data are interleaved (re, im) pairs of the real type.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../dc_residual_math.h"

namespace kldm::cuda {

// Blocks per sample of the first (reducing) pass. A function of the shape only, never of the GPU,
// so the summation order -- and the norm's bits -- are the same on every device.
inline int64_t dc_residual_blocks_per_sample(const DcResidualLayout& L) {
  const int64_t per_sample = L.rows_per_sample * L.base.H * L.base.W;
  const int64_t want = (per_sample + 2047) / 2048;  // ~8 samples per thread of 256
  return want < 1 ? 1 : (want > 1024 ? 1024 : want);
}

// Size (doubles) of the scratch buffer `partial` the launcher needs: one slot per block and sample.
inline int64_t dc_residual_partial_size(const DcResidualLayout& L) {
  return L.samples * dc_residual_blocks_per_sample(L);
}

// r = mask * (pred - measured) into out, sq_norm[s] = sum |r|^2 over sample s (two passes: block
// sums into `partial`, then a fixed-order sum per sample). Returns the launch error, if any.
cudaError_t launch_dc_residual(const float* pred, const float* meas, const bool* mask, float* out,
                               double* partial, float* sq_norm, const DcResidualLayout& L,
                               cudaStream_t stream);
cudaError_t launch_dc_residual(const float* pred, const float* meas, const float* mask, float* out,
                               double* partial, float* sq_norm, const DcResidualLayout& L,
                               cudaStream_t stream);
cudaError_t launch_dc_residual(const double* pred, const double* meas, const bool* mask,
                               double* out, double* partial, double* sq_norm,
                               const DcResidualLayout& L, cudaStream_t stream);
cudaError_t launch_dc_residual(const double* pred, const double* meas, const double* mask,
                               double* out, double* partial, double* sq_norm,
                               const DcResidualLayout& L, cudaStream_t stream);

}  // namespace kldm::cuda
