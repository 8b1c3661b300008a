// SPDX-License-Identifier: MIT
// CUDA kernels of kldm::kspace_normalize / kldm::kspace_denormalize. Raw CUDA only (no torch
// headers); argument checks, streams and registration are in kspace_normalize_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "../kspace_normalize_math.h"
#include "dcnorm_reduce.cuh"
#include "kspace_normalize_launcher.h"

namespace kldm::cuda {
namespace {

using detail::kReduceThreads;
using detail::kWarps;
using detail::Vec2;

// Statistics, pass 1. blockIdx.y walks the planes; blockIdx.x and the threads cover a plane with a
// grid-stride loop (coalesced vector loads). Each block sums the deviations of its samples from a
// shift -- the plane's sample at the block's first index -- and stores its (count, mean, M2) for
// the real and imaginary parts at partial[5 * (p * gridDim.x + blockIdx.x)].
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    normalize_stats_kernel(const Vec2<T>* __restrict__ z, double* __restrict__ partial,
                           NormalizeLayout L) {
  __shared__ double shared[5 * kWarps];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x;  // < n by the grid size
  for (int64_t p = blockIdx.y; p < L.planes; p += gridDim.y) {
    const Vec2<T>* zp = z + p * L.n;
    const Vec2<T> k = zp[first];
    const double kr = k.x, ki = k.y;
    double v[5] = {0.0, 0.0, 0.0, 0.0, 0.0};  // count, sum dr, sum dr^2, sum di, sum di^2
    for (int64_t j = first + threadIdx.x; j < L.n; j += stride) {
      const Vec2<T> x = zp[j];
      const double dr = static_cast<double>(x.x) - kr;
      const double di = static_cast<double>(x.y) - ki;
      v[0] += 1.0;
      v[1] += dr;
      v[2] += dr * dr;
      v[3] += di;
      v[4] += di * di;
    }
    detail::block_sum(v, shared);
    if (threadIdx.x == 0) {
      const math::Moments re = math::moments_from_shifted(v[0], kr, v[1], v[2]);
      const math::Moments im = math::moments_from_shifted(v[0], ki, v[3], v[4]);
      double* o = partial + 5 * (p * gridDim.x + blockIdx.x);
      o[0] = v[0];
      o[1] = re.mean;
      o[2] = re.m2;
      o[3] = im.mean;
      o[4] = im.m2;
    }
  }
}

// Statistics, pass 2: one thread per plane merges its blocks' moments in block order.
template <typename T>
__global__ void normalize_finish_kernel(const double* __restrict__ partial, int64_t parts,
                                        int64_t planes, T eps, T* __restrict__ mean,
                                        T* __restrict__ std) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < planes;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    math::Moments re, im;
    for (int64_t b = 0; b < parts; ++b) {
      const double* o = partial + 5 * (p * parts + b);
      re = math::merge_moments(re, math::Moments{o[0], o[1], o[2]});
      im = math::merge_moments(im, math::Moments{o[0], o[3], o[4]});
    }
    mean[2 * p] = static_cast<T>(re.mean);
    mean[2 * p + 1] = static_cast<T>(im.mean);
    std[2 * p] = math::effective_std(static_cast<T>(math::unbiased_std(re)), eps);
    std[2 * p + 1] = math::effective_std(static_cast<T>(math::unbiased_std(im)), eps);
  }
}

// One thread per complex sample (grid-stride): a coalesced vector load, two coalesced stores into
// the real and imaginary channel planes.
template <typename T>
__global__ void normalize_write_kernel(const Vec2<T>* __restrict__ z, const T* __restrict__ mean,
                                       const T* __restrict__ std, T* __restrict__ out,
                                       NormalizeLayout L) {
  const int64_t total = L.planes * L.n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / L.n;
    const int64_t k = i - p * L.n;
    const Vec2<T> x = z[i];
    out[2 * p * L.n + k] = math::normalize_value(x.x, mean[2 * p], std[2 * p]);
    out[(2 * p + 1) * L.n + k] = math::normalize_value(x.y, mean[2 * p + 1], std[2 * p + 1]);
  }
}

template <typename T>
__global__ void effective_std_kernel(T* __restrict__ std, int64_t count, T eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    std[i] = math::effective_std(std[i], eps);
  }
}

// One thread per complex sample: two coalesced channel loads, one coalesced vector store.
template <typename T>
__global__ void denormalize_kernel(const T* __restrict__ x, const T* __restrict__ mean,
                                   const T* __restrict__ std, Vec2<T>* __restrict__ z,
                                   NormalizeLayout L) {
  const int64_t total = L.planes * L.n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / L.n;
    const int64_t k = i - p * L.n;
    Vec2<T> v;
    v.x = math::denormalize_value(x[2 * p * L.n + k], mean[2 * p], std[2 * p]);
    v.y = math::denormalize_value(x[(2 * p + 1) * L.n + k], mean[2 * p + 1], std[2 * p + 1]);
    z[i] = v;
  }
}

// Elementwise grid: enough blocks to fill the GPU a few times over; the grid-stride loop does the
// rest.
unsigned elementwise_blocks(int64_t n, int threads, int num_sms) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 80) * 32;
  return static_cast<unsigned>(want < cap ? want : cap);
}

template <typename T>
cudaError_t stats(const T* z, double* partial, T* mean, T* std, T eps, const NormalizeLayout& L,
                  cudaStream_t stream) {
  if (L.planes == 0) return cudaSuccess;
  const int64_t bx = normalize_blocks_per_plane(L);
  const int64_t by = L.planes < 65535 ? L.planes : 65535;
  normalize_stats_kernel<T>
      <<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), kReduceThreads, 0, stream>>>(
          reinterpret_cast<const Vec2<T>*>(z), partial, L);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  constexpr int threads = 128;
  const int64_t blocks = (L.planes + threads - 1) / threads;
  normalize_finish_kernel<T>
      <<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), threads, 0, stream>>>(
          partial, bx, L.planes, eps, mean, std);
  return cudaGetLastError();
}

template <typename T>
cudaError_t write(const T* z, const T* mean, const T* std, T* out, const NormalizeLayout& L,
                  int num_sms, cudaStream_t stream) {
  const int64_t total = L.planes * L.n;
  if (total == 0) return cudaSuccess;
  constexpr int threads = 256;
  normalize_write_kernel<T><<<elementwise_blocks(total, threads, num_sms), threads, 0, stream>>>(
      reinterpret_cast<const Vec2<T>*>(z), mean, std, out, L);
  return cudaGetLastError();
}

template <typename T>
cudaError_t clamp_std(T* std, int64_t count, T eps, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  constexpr int threads = 256;
  const int64_t blocks = (count + threads - 1) / threads;
  effective_std_kernel<T>
      <<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), threads, 0, stream>>>(std, count,
                                                                                     eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t denorm(const T* x, const T* mean, const T* std, T* z, const NormalizeLayout& L,
                   int num_sms, cudaStream_t stream) {
  const int64_t total = L.planes * L.n;
  if (total == 0) return cudaSuccess;
  constexpr int threads = 256;
  denormalize_kernel<T><<<elementwise_blocks(total, threads, num_sms), threads, 0, stream>>>(
      x, mean, std, reinterpret_cast<Vec2<T>*>(z), L);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_normalize_stats(const float* z, double* partial, float* mean, float* std,
                                   float eps, const NormalizeLayout& L, cudaStream_t stream) {
  return stats(z, partial, mean, std, eps, L, stream);
}
cudaError_t launch_normalize_stats(const double* z, double* partial, double* mean, double* std,
                                   double eps, const NormalizeLayout& L, cudaStream_t stream) {
  return stats(z, partial, mean, std, eps, L, stream);
}
cudaError_t launch_normalize_write(const float* z, const float* mean, const float* std, float* out,
                                   const NormalizeLayout& L, int num_sms, cudaStream_t stream) {
  return write(z, mean, std, out, L, num_sms, stream);
}
cudaError_t launch_normalize_write(const double* z, const double* mean, const double* std,
                                   double* out, const NormalizeLayout& L, int num_sms,
                                   cudaStream_t stream) {
  return write(z, mean, std, out, L, num_sms, stream);
}
cudaError_t launch_effective_std(float* std, int64_t count, float eps, cudaStream_t stream) {
  return clamp_std(std, count, eps, stream);
}
cudaError_t launch_effective_std(double* std, int64_t count, double eps, cudaStream_t stream) {
  return clamp_std(std, count, eps, stream);
}
cudaError_t launch_denormalize(const float* x, const float* mean, const float* std, float* z,
                               const NormalizeLayout& L, int num_sms, cudaStream_t stream) {
  return denorm(x, mean, std, z, L, num_sms, stream);
}
cudaError_t launch_denormalize(const double* x, const double* mean, const double* std, double* z,
                               const NormalizeLayout& L, int num_sms, cudaStream_t stream) {
  return denorm(x, mean, std, z, L, num_sms, stream);
}

}  // namespace kldm::cuda
