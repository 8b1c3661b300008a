// SPDX-License-Identifier: MIT
// Deterministic block reductions and complex vector loads for the dc_residual and kspace_normalize
// kernels (raw CUDA, no torch headers).
#pragma once

#include <cuda_runtime.h>

namespace kldm::cuda::detail {

// (re, im) pair as one aligned vector load/store: a warp moves 32 consecutive complex samples in
// one coalesced transaction (256 B for complex64).
template <typename T>
struct Vec2Of;
template <>
struct Vec2Of<float> {
  using type = float2;
};
template <>
struct Vec2Of<double> {
  using type = double2;
};
template <typename T>
using Vec2 = typename Vec2Of<T>::type;

constexpr int kReduceThreads = 256;  // block size of every reducing kernel
constexpr int kWarps = kReduceThreads / 32;

// Sums N doubles over the block; the result is valid in thread 0. The tree (shuffles, then the warp
// partials in warp order) is fixed, so the result depends on the inputs only: deterministic. Every
// thread of the block must call it; `shared` needs N * kWarps doubles.
template <int N>
__device__ __forceinline__ void block_sum(double (&v)[N], double* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[j] += __shfl_down_sync(0xffffffffu, v[j], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < N; ++j) shared[j * kWarps + warp] = v[j];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      v[j] = lane < kWarps ? shared[j * kWarps + lane] : 0.0;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v[j] += __shfl_down_sync(0xffffffffu, v[j], off);
    }
  }
  __syncthreads();  // `shared` may be reused right after
}

}  // namespace kldm::cuda::detail
