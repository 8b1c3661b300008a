// SPDX-License-Identifier: MIT
// Plain launchers of the kspace_normalize / kspace_denormalize CUDA kernels (no torch types),
// called by kspace_normalize_cuda.cpp. Complex data are interleaved (re, im) pairs of the real
// type; the layout is that of kspace_normalize_math.h (planes = B * C complex planes of n = H * W
// samples, real channel 2p = Re plane p, 2p + 1 = Im plane p).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../kspace_normalize_math.h"

namespace kldm::cuda {

// Blocks per plane of the statistics pass: a function of the shape only, never of the GPU, so the
// summation order -- and the statistics' bits -- are the same on every device.
inline int64_t normalize_blocks_per_plane(const NormalizeLayout& L) {
  const int64_t want = (L.n + 2047) / 2048;  // ~8 samples per thread of 256
  return want < 1 ? 1 : (want > 1024 ? 1024 : want);
}

// Size (doubles) of the scratch buffer of launch_normalize_stats: 5 per block and plane.
inline int64_t normalize_partial_size(const NormalizeLayout& L) {
  return 5 * L.planes * normalize_blocks_per_plane(L);
}

// mean[2p + c], std[2p + c] (std: unbiased, <= eps replaced by 1) of the real (c = 0) and imaginary
// (c = 1) parts of each plane, in two passes through `partial`. Needs n >= 2.
cudaError_t launch_normalize_stats(const float* z, double* partial, float* mean, float* std,
                                   float eps, const NormalizeLayout& L, cudaStream_t stream);
cudaError_t launch_normalize_stats(const double* z, double* partial, double* mean, double* std,
                                   double eps, const NormalizeLayout& L, cudaStream_t stream);

// out[(2p + c) * n + k] = (part c of z[p * n + k] - mean[2p + c]) / std[2p + c].
cudaError_t launch_normalize_write(const float* z, const float* mean, const float* std, float* out,
                                   const NormalizeLayout& L, int num_sms, cudaStream_t stream);
cudaError_t launch_normalize_write(const double* z, const double* mean, const double* std,
                                   double* out, const NormalizeLayout& L, int num_sms,
                                   cudaStream_t stream);

// In place: std[i] <= eps becomes 1 (given statistics get the same guard as computed ones).
cudaError_t launch_effective_std(float* std, int64_t count, float eps, cudaStream_t stream);
cudaError_t launch_effective_std(double* std, int64_t count, double eps, cudaStream_t stream);

// z[p * n + k] = (x[2p * n + k] * std[2p] + mean[2p], x[(2p + 1) * n + k] * std[2p + 1] + ...).
cudaError_t launch_denormalize(const float* x, const float* mean, const float* std, float* z,
                               const NormalizeLayout& L, int num_sms, cudaStream_t stream);
cudaError_t launch_denormalize(const double* x, const double* mean, const double* std, double* z,
                               const NormalizeLayout& L, int num_sms, cudaStream_t stream);

}  // namespace kldm::cuda
