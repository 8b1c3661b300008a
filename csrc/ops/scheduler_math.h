// SPDX-License-Identifier: MIT
// Per-element formulas of the fused DDPM/DDIM scheduler steps, compiled by the CPU loop and the
// CUDA kernel alike (plain C++, no torch).
//
// Bit parity with diffusers: diffusers' step is a chain of eager PyTorch ops, each rounding its
// result to the tensor dtype. The formulas below perform the same IEEE operations in the same order
// with the same operands, and every multiply/add/subtract/divide is rounded on its own: on the GPU
// through the __*_rn intrinsics, which nvcc never contracts into FMAs; on the host through plain
// operators (x86-64 without -mfma has no FMA instruction to contract into; see the tests for the
// measured parity).
#pragma once

#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cstring>
#endif

#include "host_device.h"
#include "scheduler_step_params.h"

namespace kldm::math {

// ---- Correctly rounded, never-contracted arithmetic -------------------------------------------

KLDM_HOST_DEVICE_INLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KLDM_HOST_DEVICE_INLINE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
KLDM_HOST_DEVICE_INLINE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KLDM_HOST_DEVICE_INLINE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
KLDM_HOST_DEVICE_INLINE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KLDM_HOST_DEVICE_INLINE double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
KLDM_HOST_DEVICE_INLINE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
KLDM_HOST_DEVICE_INLINE double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// torch.clamp semantics: NaN propagates; lo > hi gives hi.
template <typename C>
KLDM_HOST_DEVICE_INLINE C clamp_nan(C x, C lo, C hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

// ---- bfloat16 stored as its 16 bits ---------------------------------------------------------

KLDM_HOST_DEVICE_INLINE uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
KLDM_HOST_DEVICE_INLINE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Same conversion as c10::BFloat16 (round to nearest even; every NaN becomes 0x7FC0).
KLDM_HOST_DEVICE_INLINE float bf16_to_float(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}
KLDM_HOST_DEVICE_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Storage type T <-> compute type: float32 and float64 compute in their own type; bfloat16 (held as
// uint16_t bits) computes in float32 and rounds once, when the result is stored.
template <typename T>
struct StepIO {
  using compute_t = T;
  static KLDM_HOST_DEVICE_INLINE T load(T x) { return x; }
  static KLDM_HOST_DEVICE_INLINE T store(T x) { return x; }
};
template <>
struct StepIO<uint16_t> {
  using compute_t = float;
  static KLDM_HOST_DEVICE_INLINE float load(uint16_t x) { return bf16_to_float(x); }
  static KLDM_HOST_DEVICE_INLINE uint16_t store(float x) { return float_to_bf16(x); }
};

// Step coefficients in the compute type.
template <typename C>
struct StepCoeffs {
  C sqrt_alpha_prod_t, sqrt_beta_prod_t, coeff_x0, coeff_second, noise_std, clip_limit;

  static KLDM_HOST_DEVICE_INLINE StepCoeffs from(const SchedulerStepParams& p) {
    return {static_cast<C>(p.sqrt_alpha_prod_t), static_cast<C>(p.sqrt_beta_prod_t),
            static_cast<C>(p.coeff_x0),          static_cast<C>(p.coeff_second),
            static_cast<C>(p.noise_std),         static_cast<C>(p.clip_limit)};
  }
};

// One element of the step, without the noise term. Writes the (clipped/thresholded) predicted
// original sample and the posterior mean; operation order is diffusers', op for op:
//   epsilon:      x0 = (s - sqrt(1-a_t) * m) / sqrt(a_t)           eps = m
//   sample:       x0 = m                                           eps = (s - sqrt(a_t) x0) /
//   sqrt(1-a_t) v_prediction: x0 = sqrt(a_t) s - sqrt(1-a_t) m                 eps = sqrt(a_t) m +
//   sqrt(1-a_t) s x0 = clamp(x0, -lim, lim) [/ lim when thresholding, lim = s_b] kDdimClippedEps:
//   eps = (s - sqrt(a_t) x0) / sqrt(1-a_t) with the clipped x0 mean = coeff_x0 * x0 + coeff_second
//   * (kDdpm ? s : eps)
template <PredictionType P, StepKind K, bool kThreshold, typename C>
KLDM_HOST_DEVICE_INLINE void step_mean(C m, C s, const StepCoeffs<C>& k, C lim, C& x0_out,
                                       C& mean_out) {
  constexpr bool kNeedEps = K == StepKind::kDdim;  // eps from the unclipped prediction
  C x0;
  C eps = C(0);
  if constexpr (P == PredictionType::kEpsilon) {
    x0 = div_rn(sub_rn(s, mul_rn(k.sqrt_beta_prod_t, m)), k.sqrt_alpha_prod_t);
    eps = m;
  } else if constexpr (P == PredictionType::kSample) {
    x0 = m;
    if constexpr (kNeedEps) {
      eps = div_rn(sub_rn(s, mul_rn(k.sqrt_alpha_prod_t, x0)), k.sqrt_beta_prod_t);
    }
  } else {
    x0 = sub_rn(mul_rn(k.sqrt_alpha_prod_t, s), mul_rn(k.sqrt_beta_prod_t, m));
    if constexpr (kNeedEps) {
      eps = add_rn(mul_rn(k.sqrt_alpha_prod_t, m), mul_rn(k.sqrt_beta_prod_t, s));
    }
  }
  x0 = clamp_nan(x0, -lim, lim);
  if constexpr (kThreshold) x0 = div_rn(x0, lim);
  if constexpr (K == StepKind::kDdimClippedEps) {
    eps = div_rn(sub_rn(s, mul_rn(k.sqrt_alpha_prod_t, x0)), k.sqrt_beta_prod_t);
  }
  const C second = K == StepKind::kDdpm ? s : eps;
  x0_out = x0;
  mean_out = add_rn(mul_rn(k.coeff_x0, x0), mul_rn(k.coeff_second, second));
}

// prev_sample = mean + noise_std * noise (the separate "variance" tensor of diffusers).
template <typename C>
KLDM_HOST_DEVICE_INLINE C add_noise(C mean, C noise, C noise_std) {
  return add_rn(mean, mul_rn(noise_std, noise));
}

}  // namespace kldm::math
