// SPDX-License-Identifier: MIT
// Per-element formula of dc_project, shared by the CPU loop (dc_project.cpp) and the CUDA kernel
// (cuda/dc_project_kernel.cu), so both compile the same lines.
// Complex numbers are handled as interleaved (re, im) pairs of a real type T: the memory layout of
// c10::complex<T>, std::complex<T>, float2 and double2 alike.
#pragma once

#include "host_device.h"

namespace kldm::math {

// Data-consistency blend: out = (1 - a) * pred + a * meas for a in [0, 1].
// a == 1 copies the measurement and a == 0 copies the prediction exactly (no rounding from the
// blend), so hard replacement keeps the measured samples bit for bit.
template <typename T>
KLDM_HOST_DEVICE_INLINE void dc_blend(const T* pred, const T* meas, T a, T* out) {
  if (a == T(1)) {
    out[0] = meas[0];
    out[1] = meas[1];
  } else if (a == T(0)) {
    out[0] = pred[0];
    out[1] = pred[1];
  } else {
    const T b = T(1) - a;
    out[0] = b * pred[0] + a * meas[0];
    out[1] = b * pred[1] + a * meas[1];
  }
}

}  // namespace kldm::math
