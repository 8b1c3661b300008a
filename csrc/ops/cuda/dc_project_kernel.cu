// SPDX-License-Identifier: MIT
// CUDA kernels of kldm::dc_project. Raw CUDA only (no torch headers): nvcc compiles this in ~2 s;
// argument checks, streams and registration are in dc_project_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "../dc_project_layout.h"
#include "../dc_project_math.h"
#include "dc_project_launcher.h"

namespace kldm::cuda {
namespace {

// One thread per complex element, grid-stride loop. Loads are coalesced: consecutive threads read
// consecutive (re, im) pairs; the mask read is a broadcast (same column) or coalesced (2-D mask).
template <typename T, typename M>
__global__ void dc_project_kernel(const T* __restrict__ pred, const T* __restrict__ meas,
                                  const M* __restrict__ mask, T weight, T* __restrict__ out,
                                  DcProjectLayout L) {
  const int64_t plane = L.H * L.W;
  const int64_t n = L.rows * plane;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / plane;
    const int64_t hw = i - r * plane;
    const int64_t h = hw / L.W;
    const int64_t w = hw - h * L.W;
    const T a =
        weight *
        static_cast<T>(mask[L.mask_row_offset(r) + h * L.mask_stride_h + w * L.mask_stride_w]);
    math::dc_blend(pred + 2 * i, meas + 2 * i, a, out + 2 * i);
  }
}

template <typename T, typename M>
cudaError_t launch(const T* pred, const T* meas, const M* mask, T weight, T* out,
                   const DcProjectLayout& L, int num_sms, cudaStream_t stream) {
  const int64_t n = L.rows * L.H * L.W;
  if (n == 0) return cudaSuccess;
  constexpr int threads = 256;
  // Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest.
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 80) * 32;
  const int blocks = static_cast<int>(want < cap ? want : cap);
  dc_project_kernel<T, M><<<blocks, threads, 0, stream>>>(pred, meas, mask, weight, out, L);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dc_project(const float* pred, const float* meas, const bool* mask, float weight,
                              float* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream) {
  return launch(pred, meas, mask, weight, out, L, num_sms, stream);
}
cudaError_t launch_dc_project(const float* pred, const float* meas, const float* mask, float weight,
                              float* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream) {
  return launch(pred, meas, mask, weight, out, L, num_sms, stream);
}
cudaError_t launch_dc_project(const double* pred, const double* meas, const bool* mask,
                              double weight, double* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream) {
  return launch(pred, meas, mask, weight, out, L, num_sms, stream);
}
cudaError_t launch_dc_project(const double* pred, const double* meas, const double* mask,
                              double weight, double* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream) {
  return launch(pred, meas, mask, weight, out, L, num_sms, stream);
}

}  // namespace kldm::cuda
