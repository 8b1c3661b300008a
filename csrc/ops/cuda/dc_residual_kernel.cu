// SPDX-License-Identifier: MIT
// CUDA kernels of kldm::dc_residual. Raw CUDA only (no torch headers); argument checks, streams and
// registration are in dc_residual_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "../dc_residual_math.h"
#include "dc_residual_launcher.h"
#include "dcnorm_reduce.cuh"

namespace kldm::cuda {
namespace {

using detail::kReduceThreads;
using detail::kWarps;
using detail::Vec2;

// Pass 1. blockIdx.y walks the samples, blockIdx.x and the threads cover a sample with a
// grid-stride loop; consecutive threads touch consecutive complex samples (coalesced vector loads
// and stores). Each block writes the sum of |r|^2 over its share of the sample to
// partial[s * gridDim.x + blockIdx.x].
template <typename T, typename M>
__global__ void __launch_bounds__(kReduceThreads)
    dc_residual_kernel(const Vec2<T>* __restrict__ pred, const Vec2<T>* __restrict__ meas,
                       const M* __restrict__ mask, Vec2<T>* __restrict__ out,
                       double* __restrict__ partial, DcResidualLayout L) {
  __shared__ double shared[kWarps];
  const DcProjectLayout& B = L.base;
  const int64_t plane = B.H * B.W;
  const int64_t per_sample = L.rows_per_sample * plane;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t s = blockIdx.y; s < L.samples; s += gridDim.y) {
    double acc[1] = {0.0};
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < per_sample;
         j += stride) {
      const int64_t i = s * per_sample + j;
      const int64_t row = i / plane;
      const int64_t hw = i - row * plane;
      const int64_t h = hw / B.W;
      const int64_t w = hw - h * B.W;
      const T m =
          static_cast<T>(mask[B.mask_row_offset(row) + h * B.mask_stride_h + w * B.mask_stride_w]);
      const Vec2<T> p = pred[i];
      const Vec2<T> q = meas[i];
      Vec2<T> r;
      acc[0] += math::dc_residual<double>(p.x, p.y, q.x, q.y, m, r.x, r.y);
      out[i] = r;
    }
    detail::block_sum(acc, shared);
    if (threadIdx.x == 0) partial[s * gridDim.x + blockIdx.x] = acc[0];
  }
}

// Pass 2: sq_norm[s] = the sum of sample s's block sums, in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    dc_residual_finish_kernel(const double* __restrict__ partial, int64_t parts, int64_t samples,
                              T* __restrict__ sq_norm) {
  __shared__ double shared[kWarps];
  for (int64_t s = blockIdx.x; s < samples; s += gridDim.x) {
    double acc[1] = {0.0};
    for (int64_t k = threadIdx.x; k < parts; k += blockDim.x) acc[0] += partial[s * parts + k];
    detail::block_sum(acc, shared);
    if (threadIdx.x == 0) sq_norm[s] = static_cast<T>(acc[0]);
  }
}

template <typename T, typename M>
cudaError_t launch(const T* pred, const T* meas, const M* mask, T* out, double* partial, T* sq_norm,
                   const DcResidualLayout& L, cudaStream_t stream) {
  if (L.samples == 0) return cudaSuccess;
  const int64_t bx = dc_residual_blocks_per_sample(L);
  const int64_t by = L.samples < 65535 ? L.samples : 65535;
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  dc_residual_kernel<T, M><<<grid, kReduceThreads, 0, stream>>>(
      reinterpret_cast<const Vec2<T>*>(pred), reinterpret_cast<const Vec2<T>*>(meas), mask,
      reinterpret_cast<Vec2<T>*>(out), partial, L);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t fb = L.samples < 65535 ? L.samples : 65535;
  dc_residual_finish_kernel<T>
      <<<static_cast<unsigned>(fb), kReduceThreads, 0, stream>>>(partial, bx, L.samples, sq_norm);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dc_residual(const float* pred, const float* meas, const bool* mask, float* out,
                               double* partial, float* sq_norm, const DcResidualLayout& L,
                               cudaStream_t stream) {
  return launch(pred, meas, mask, out, partial, sq_norm, L, stream);
}
cudaError_t launch_dc_residual(const float* pred, const float* meas, const float* mask, float* out,
                               double* partial, float* sq_norm, const DcResidualLayout& L,
                               cudaStream_t stream) {
  return launch(pred, meas, mask, out, partial, sq_norm, L, stream);
}
cudaError_t launch_dc_residual(const double* pred, const double* meas, const bool* mask,
                               double* out, double* partial, double* sq_norm,
                               const DcResidualLayout& L, cudaStream_t stream) {
  return launch(pred, meas, mask, out, partial, sq_norm, L, stream);
}
cudaError_t launch_dc_residual(const double* pred, const double* meas, const double* mask,
                               double* out, double* partial, double* sq_norm,
                               const DcResidualLayout& L, cudaStream_t stream) {
  return launch(pred, meas, mask, out, partial, sq_norm, L, stream);
}

}  // namespace kldm::cuda
