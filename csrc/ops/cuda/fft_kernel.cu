// SPDX-License-Identifier: MIT
// CUDA kernels of the centred FFTs and coil ops (fft2c, ifft2c, sense_forward, sense_adjoint, rss):
// phase tables, the fused modulation pass, the fused post-phase coil combination and rss. Raw
// CUDA only (no torch headers); the FFT itself is cuFFT through ATen, called from fft_cuda.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "../fft_math.h"
#include "fft_launcher.h"

namespace kldm::cuda {
namespace {

constexpr int kThreads = 256;

// Complex element as one 8- or 16-byte vector, so a warp's loads of consecutive elements coalesce
// into full transactions.
template <typename T>
struct Vec2;
template <>
struct Vec2<float> {
  using type = float2;
};
template <>
struct Vec2<double> {
  using type = double2;
};

template <typename T>
__device__ __forceinline__ void load2(const T* p, int64_t i, T* v) {
  const auto q = reinterpret_cast<const typename Vec2<T>::type*>(p)[i];
  v[0] = q.x;
  v[1] = q.y;
}

template <typename T>
__device__ __forceinline__ void store2(T* p, int64_t i, const T* v) {
  typename Vec2<T>::type q;
  q.x = v[0];
  q.y = v[1];
  reinterpret_cast<typename Vec2<T>::type*>(p)[i] = q;
}

int grid_size(int64_t n, int num_sms) {
  // Enough blocks to fill the GPU a few times over; the grid-stride loops cover the rest.
  const int64_t want = (n + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 80) * 32;
  return static_cast<int>(want < cap ? want : cap);
}

template <typename T>
__global__ void centring_tables_kernel(T* table, int64_t H, int64_t W, bool inverse) {
  const int64_t n = 2 * (H + W);
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    math::phase_table_entry(j, H, W, inverse, table);
  }
}

// One thread per complex output element of [B, C, H, W], grid-stride. `in` and `out` may alias
// (in-place post-modulation), so they are not __restrict__.
template <typename T, typename M>
__global__ void modulate_kernel(const T* in, const T* __restrict__ maps, const M* __restrict__ mask,
                                const T* __restrict__ tab_h, const T* __restrict__ tab_w, T* out,
                                ModulateLayout L) {
  const int64_t plane = L.H * L.W;
  const int64_t n = L.B * L.C * plane;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t hw = i % plane;
    const int64_t bc = i / plane;
    const int64_t c = bc % L.C;
    const int64_t b = bc / L.C;
    const int64_t h = hw / L.W;
    const int64_t w = hw - h * L.W;
    T x[2], s[2], p[2], y[2];
    load2(in, b * L.in_sb + c * L.in_sc + hw, x);
    if (maps != nullptr) load2(maps, b * L.maps_sb + c * L.maps_sc + hw, s);
    const T m =
        mask != nullptr
            ? static_cast<T>(mask[b * L.mask_sb + c * L.mask_sc + h * L.mask_sh + w * L.mask_sw])
            : T(1);
    if (L.even) {
      p[0] = tab_h[2 * h] * tab_w[2 * w];
      p[1] = T(0);
    } else {
      math::phase_hw(tab_h, tab_w, h, w, p);
    }
    math::modulate(x, maps != nullptr ? s : nullptr, m, p, L.even, y);
    store2(out, i, y);
  }
}

// One thread per output element (b, h, w); the coil loop reads, for each c, a coalesced row of
// z and of the maps.
template <typename T>
__global__ void coil_combine_kernel(const T* __restrict__ z, const T* __restrict__ maps,
                                    const T* __restrict__ tab_h, const T* __restrict__ tab_w,
                                    T* __restrict__ out, CoilLayout L) {
  const int64_t plane = L.H * L.W;
  const int64_t n = L.B * plane;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / plane;
    const int64_t hw = i - b * plane;
    const int64_t h = hw / L.W;
    const int64_t w = hw - h * L.W;
    T acc[2] = {T(0), T(0)};
    for (int64_t c = 0; c < L.C; ++c) {
      T zc[2], sc[2];
      load2(z, (b * L.C + c) * plane + hw, zc);
      load2(maps, b * L.maps_sb + c * plane + hw, sc);
      math::cmul_conj_acc(sc, zc, acc);
    }
    T y[2];
    if (L.even) {
      const T s = tab_h[2 * h] * tab_w[2 * w];
      y[0] = acc[0] * s;
      y[1] = acc[1] * s;
    } else {
      T p[2];
      math::phase_hw(tab_h, tab_w, h, w, p);
      math::cmul(acc, p, y);
    }
    store2(out, i, y);
  }
}

template <typename T, bool kComplex>
__global__ void rss_kernel(const T* __restrict__ x, T* __restrict__ out, CoilLayout L) {
  const int64_t plane = L.H * L.W;
  const int64_t n = L.B * plane;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / plane;
    const int64_t hw = i - b * plane;
    T acc = T(0);
    for (int64_t c = 0; c < L.C; ++c) {
      const int64_t j = (b * L.C + c) * plane + hw;
      if constexpr (kComplex) {
        T v[2];
        load2(x, j, v);
        acc += v[0] * v[0] + v[1] * v[1];
      } else {
        acc += x[j] * x[j];
      }
    }
    out[i] = sqrt(acc);
  }
}

template <typename T>
cudaError_t tables(T* table, int64_t H, int64_t W, bool inverse, cudaStream_t stream) {
  const int64_t n = 2 * (H + W);
  if (n == 0) return cudaSuccess;
  centring_tables_kernel<T><<<grid_size(n, 0), kThreads, 0, stream>>>(table, H, W, inverse);
  return cudaGetLastError();
}

template <typename T, typename M>
cudaError_t modulate(const T* in, const T* maps, const M* mask, const T* tab_h, const T* tab_w,
                     T* out, const ModulateLayout& L, int num_sms, cudaStream_t stream) {
  const int64_t n = L.B * L.C * L.H * L.W;
  if (n == 0) return cudaSuccess;
  modulate_kernel<T, M>
      <<<grid_size(n, num_sms), kThreads, 0, stream>>>(in, maps, mask, tab_h, tab_w, out, L);
  return cudaGetLastError();
}

template <typename T>
cudaError_t coil_combine(const T* z, const T* maps, const T* tab_h, const T* tab_w, T* out,
                         const CoilLayout& L, int num_sms, cudaStream_t stream) {
  const int64_t n = L.B * L.H * L.W;
  if (n == 0) return cudaSuccess;
  coil_combine_kernel<T>
      <<<grid_size(n, num_sms), kThreads, 0, stream>>>(z, maps, tab_h, tab_w, out, L);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rss(const T* x, bool complex_input, T* out, const CoilLayout& L, int num_sms,
                cudaStream_t stream) {
  const int64_t n = L.B * L.H * L.W;
  if (n == 0) return cudaSuccess;
  if (complex_input) {
    rss_kernel<T, true><<<grid_size(n, num_sms), kThreads, 0, stream>>>(x, out, L);
  } else {
    rss_kernel<T, false><<<grid_size(n, num_sms), kThreads, 0, stream>>>(x, out, L);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_centring_tables(float* table, int64_t H, int64_t W, bool inverse,
                                   cudaStream_t stream) {
  return tables(table, H, W, inverse, stream);
}
cudaError_t launch_centring_tables(double* table, int64_t H, int64_t W, bool inverse,
                                   cudaStream_t stream) {
  return tables(table, H, W, inverse, stream);
}

cudaError_t launch_modulate(const float* in, const float* maps, const bool* mask,
                            const float* tab_h, const float* tab_w, float* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream) {
  return modulate(in, maps, mask, tab_h, tab_w, out, L, num_sms, stream);
}
cudaError_t launch_modulate(const float* in, const float* maps, const float* mask,
                            const float* tab_h, const float* tab_w, float* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream) {
  return modulate(in, maps, mask, tab_h, tab_w, out, L, num_sms, stream);
}
cudaError_t launch_modulate(const double* in, const double* maps, const bool* mask,
                            const double* tab_h, const double* tab_w, double* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream) {
  return modulate(in, maps, mask, tab_h, tab_w, out, L, num_sms, stream);
}
cudaError_t launch_modulate(const double* in, const double* maps, const double* mask,
                            const double* tab_h, const double* tab_w, double* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream) {
  return modulate(in, maps, mask, tab_h, tab_w, out, L, num_sms, stream);
}

cudaError_t launch_coil_combine(const float* z, const float* maps, const float* tab_h,
                                const float* tab_w, float* out, const CoilLayout& L, int num_sms,
                                cudaStream_t stream) {
  return coil_combine(z, maps, tab_h, tab_w, out, L, num_sms, stream);
}
cudaError_t launch_coil_combine(const double* z, const double* maps, const double* tab_h,
                                const double* tab_w, double* out, const CoilLayout& L, int num_sms,
                                cudaStream_t stream) {
  return coil_combine(z, maps, tab_h, tab_w, out, L, num_sms, stream);
}

cudaError_t launch_rss(const float* x, bool complex_input, float* out, const CoilLayout& L,
                       int num_sms, cudaStream_t stream) {
  return rss(x, complex_input, out, L, num_sms, stream);
}
cudaError_t launch_rss(const double* x, bool complex_input, double* out, const CoilLayout& L,
                       int num_sms, cudaStream_t stream) {
  return rss(x, complex_input, out, L, num_sms, stream);
}

}  // namespace kldm::cuda
