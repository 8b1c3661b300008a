// SPDX-License-Identifier: MIT
// Centred FFT and coil-handling formulas shared by the CPU loops (fft.cpp, sense.cpp) and the CUDA
// kernels (cuda/fft_kernel.cu). Plain C++, no torch: nvcc compiles it without torch headers.
//
// Centring by modulation (derivation in docs/fft_centering.md). Per dim of length N with
// c = N / 2 (integer division), for the forward transform
//
//   fftshift(F(ifftshift(x)))[k] = b[k] * F(a * x)[k],
//   a[m] = exp(+2 pi i * (c m mod N) / N),  b[k] = exp(+2 pi i * (c (k - c) mod N) / N),
//
// with F the orthonormal DFT; the inverse transform uses conj(a) and conj(b). Even N: a[m] =
// (-1)^m and b[k] = (-1)^k (-1)^(N/2) (a global sign -1 when N % 4 == 2). In 2-D the factors of the
// two dims multiply. Phases are kept as integer "turns" r (angle 2 pi r / N) so that they are
// reduced exactly before any rounding.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace kldm {

constexpr int kMaxFftLeadingDims = 8;

// Element layout of one modulation pass: out[b, c, h, w] = in * maps * mask * phase(h, w), over a
// [B, C, H, W] output (for fft2c: B = product of leading dims, C = 1). Offsets are in complex
// elements; in and out may alias (in-place post-modulation).
struct ModulateLayout {
  int64_t B = 0, C = 0, H = 0, W = 0;
  int64_t in_sb = 0, in_sc = 0;      // `in` strides over b and c (h, w contiguous); in_sc may be 0
  int64_t maps_sb = 0, maps_sc = 0;  // maps strides (maps_sb == 0: one set of maps for the batch)
  int64_t mask_sb = 0, mask_sc = 0, mask_sh = 0, mask_sw = 0;  // mask broadcast strides
  bool even = false;  // H and W even: every phase is +-1, applied as an exact sign flip
};

// Layout of the coil combination out[b, h, w] = phase(h, w) * sum_c conj(maps[b, c]) * z[b, c]
// (z contiguous [B, C, H, W], maps [B or 1, C, H, W]) and of rss (maps unused).
struct CoilLayout {
  int64_t B = 0, C = 0, H = 0, W = 0;
  int64_t maps_sb = 0;  // 0 when the maps are shared by the batch
  bool even = false;
};

namespace math {

// Turns r in [0, N) of the centring phase of index k along a dim of length N: pre-modulation
// (post == false) r = c k mod N, post-modulation r = c (k - c) mod N, c = N / 2.
KLDM_HOST_DEVICE_INLINE int64_t centring_turns(int64_t k, int64_t N, bool post) {
  const int64_t c = N / 2;
  int64_t r = (c * k) % N;
  if (post) r = (r - (c * c) % N + N) % N;
  return r;
}

// exp(i * sign * 2 pi r / N) as (re, im), exact (+-1, +-i) at the quarter turns so that even sizes
// give exact signs; other angles are evaluated in double and rounded once to T.
template <typename T>
KLDM_HOST_DEVICE_INLINE void unit_phase(int64_t r, int64_t N, int sign, T* out) {
  if (r == 0) {
    out[0] = T(1);
    out[1] = T(0);
  } else if (2 * r == N) {
    out[0] = T(-1);
    out[1] = T(0);
  } else if (4 * r == N || 4 * r == 3 * N) {
    out[0] = T(0);
    out[1] = T((4 * r == N) == (sign > 0) ? 1 : -1);
  } else {
    const double theta =
        6.283185307179586476925286766559 * static_cast<double>(r) / static_cast<double>(N);
    out[0] = static_cast<T>(cos(theta));
    out[1] = static_cast<T>(sign * sin(theta));
  }
}

// Phase tables of one transform, interleaved (re, im): [pre_H (2H), pre_W (2W), post_H (2H),
// post_W (2W)], 4 (H + W) values. `inverse` conjugates them (ifft2c). Entry j < H + W of each half
// is computed by phase_table_entry(j, ...), so the CPU and the CUDA table builders share it.
template <typename T>
KLDM_HOST_DEVICE_INLINE void phase_table_entry(int64_t j, int64_t H, int64_t W, bool inverse,
                                               T* table) {
  const int sign = inverse ? -1 : 1;
  const int64_t n = H + W;
  const bool post = j >= n;
  const int64_t jj = post ? j - n : j;
  const int64_t N = jj < H ? H : W;
  const int64_t k = jj < H ? jj : jj - H;
  unit_phase(centring_turns(k, N, post), N, sign, table + 2 * j);
}

// out = a * b (complex).
template <typename T>
KLDM_HOST_DEVICE_INLINE void cmul(const T* a, const T* b, T* out) {
  const T re = a[0] * b[0] - a[1] * b[1];
  const T im = a[0] * b[1] + a[1] * b[0];
  out[0] = re;
  out[1] = im;
}

// acc += conj(a) * b (complex).
template <typename T>
KLDM_HOST_DEVICE_INLINE void cmul_conj_acc(const T* a, const T* b, T* acc) {
  acc[0] += a[0] * b[0] + a[1] * b[1];
  acc[1] += a[0] * b[1] - a[1] * b[0];
}

// Phase of element (h, w) from the two per-dim tables: the product of the row and column factors.
// For even sizes only the real parts (+-1) are used, as an exact sign.
template <typename T>
KLDM_HOST_DEVICE_INLINE void phase_hw(const T* tab_h, const T* tab_w, int64_t h, int64_t w,
                                      T* out) {
  cmul(tab_h + 2 * h, tab_w + 2 * w, out);
}

// One element of a modulation pass: out = in (* maps) * m * phase, with m the (real) mask value.
// `even`: phase is the sign s = +-1 (exact). The product in * maps is formed first, as in the
// pure-PyTorch twin (maps * image), so it rounds identically.
template <typename T>
KLDM_HOST_DEVICE_INLINE void modulate(const T* in, const T* maps, T m, const T* phase, bool even,
                                      T* out) {
  T v[2] = {in[0], in[1]};
  if (maps != nullptr) cmul(maps, in, v);
  if (even) {
    const T s = phase[0] * m;
    out[0] = v[0] * s;
    out[1] = v[1] * s;
  } else {
    const T f[2] = {phase[0] * m, phase[1] * m};
    cmul(v, f, out);
  }
}

}  // namespace math
}  // namespace kldm
