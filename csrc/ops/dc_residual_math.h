// SPDX-License-Identifier: MIT
// Per-element formulas of kldm::dc_residual, compiled by the CPU loop and the CUDA kernel alike.
#pragma once

#include <cstdint>

#include "dc_project_layout.h"
#include "host_device.h"

namespace kldm {

// dc_residual reads pred/measured/out as contiguous [samples, rows_per_sample, H, W] complex; the
// mask goes through the broadcast strides of dc_project's layout (same mask forms as dc_project).
struct DcResidualLayout {
  DcProjectLayout base;         // rows (= samples * rows_per_sample), H, W and the mask strides
  int64_t samples = 0;          // size of dim 0 (1 for a 2-D [H, W] input)
  int64_t rows_per_sample = 0;  // product of the dims between the first and H
};

namespace math {

// One part (real or imaginary) of the guidance residual: r = m * (p - q).
template <typename T>
KLDM_HOST_DEVICE_INLINE T dc_residual_part(T p, T q, T m) {
  return m * (p - q);
}

// Square of a stored residual part in the accumulation type Acc (double for float and double
// data): squaring a float in double is exact, so the norm is that of the returned r up to the
// accumulation's rounding.
template <typename Acc, typename T>
KLDM_HOST_DEVICE_INLINE Acc square_acc(T r) {
  return static_cast<Acc>(r) * static_cast<Acc>(r);
}

// Guidance residual of one complex sample, r = m * (p - q), and its squared modulus |r|^2 in Acc.
template <typename Acc, typename T>
KLDM_HOST_DEVICE_INLINE Acc dc_residual(T p_re, T p_im, T q_re, T q_im, T m, T& r_re, T& r_im) {
  r_re = dc_residual_part(p_re, q_re, m);
  r_im = dc_residual_part(p_im, q_im, m);
  return square_acc<Acc>(r_re) + square_acc<Acc>(r_im);
}

}  // namespace math
}  // namespace kldm
