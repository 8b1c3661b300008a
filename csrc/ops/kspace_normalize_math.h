// SPDX-License-Identifier: MIT
// Per-element formulas of kldm::kspace_normalize / kspace_denormalize, compiled by the CPU loops
// and the CUDA kernels alike (plain C++, no torch).
//
// Statistics are accumulated in double whatever the data type: per chunk as sums of deviations from
// a shift K (a sample of the chunk), turned into (count, mean, M2) and merged chunk by chunk with
// Chan et al.'s pairwise update. Shifting by a sample of the data avoids the catastrophic
// cancellation of the textbook sum-of-squares formula, and the merge keeps large planes accurate.
// A constant channel gets mean == its value and M2 == 0 exactly (every deviation is 0).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace kldm {

// Contiguous kspace [planes = B * C, n = H * W] complex; output/stat channel of plane p's real part
// is 2p, of its imaginary part 2p + 1 ([B, 2C, ...] flattened), matching complex_to_channels.
struct NormalizeLayout {
  int64_t planes = 0;
  int64_t n = 0;
};

namespace math {

struct Moments {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;  // sum of squared deviations from the mean
};

// Moments of `count` values from their shifted sums s1 = sum (x - shift), s2 = sum (x - shift)^2.
KLDM_HOST_DEVICE_INLINE Moments moments_from_shifted(double count, double shift, double s1,
                                                     double s2) {
  Moments m;
  m.count = count;
  if (count > 0.0) {
    m.mean = shift + s1 / count;
    const double m2 = s2 - s1 * s1 / count;
    m.m2 = m2 > 0.0 ? m2 : 0.0;  // rounding can leave a tiny negative value
  }
  return m;
}

// Chan, Golub & LeVeque's pairwise merge of two sets of moments.
KLDM_HOST_DEVICE_INLINE Moments merge_moments(const Moments& a, const Moments& b) {
  if (a.count == 0.0) return b;
  if (b.count == 0.0) return a;
  Moments m;
  m.count = a.count + b.count;
  const double delta = b.mean - a.mean;
  m.mean = a.mean + delta * (b.count / m.count);
  m.m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / m.count);
  return m;
}

// Unbiased standard deviation (divisor count - 1, as torch.std); callers guarantee count >= 2.
KLDM_HOST_DEVICE_INLINE double unbiased_std(const Moments& m) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(m.m2 / (m.count - 1.0));
#else
  return std::sqrt(m.m2 / (m.count - 1.0));
#endif
}

// The divisor used for a channel: its std, or 1 where std <= eps. A (numerically) constant channel
// has nothing to scale: it is only centred (as scikit-learn's StandardScaler does), so rounding
// noise is never blown up by 1/eps, and the divisor stays an exact inverse for denormalisation.
// NaN stays NaN (the comparison is false).
template <typename T>
KLDM_HOST_DEVICE_INLINE T effective_std(T s, T eps) {
  return s <= eps ? T(1) : s;
}

template <typename T>
KLDM_HOST_DEVICE_INLINE T normalize_value(T x, T mean, T std) {
  return (x - mean) / std;
}

template <typename T>
KLDM_HOST_DEVICE_INLINE T denormalize_value(T y, T mean, T std) {
  return y * std + mean;
}

}  // namespace math
}  // namespace kldm
