// SPDX-License-Identifier: MIT
// kldm::ddpm_step / kldm::ddim_step: one fused element-wise kernel per diffusion sampling step
// (argument checks, CPU kernel, C++ API).
#include "scheduler_step.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kldm/ops.h"
#include "scheduler_math.h"

namespace kldm {
namespace detail {

namespace {

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
}

PredictionType parse_prediction_type(const char* op, c10::string_view p) {
  if (p == "epsilon") return PredictionType::kEpsilon;
  if (p == "sample") return PredictionType::kSample;
  if (p == "v_prediction") return PredictionType::kVPrediction;
  TORCH_CHECK_VALUE(false, op,
                    ": prediction_type must be 'epsilon', 'sample' or 'v_prediction', got '",
                    std::string(p), "'");
}

void check_like_sample(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& sample) {
  TORCH_CHECK_TYPE(t.scalar_type() == sample.scalar_type(), op, ": ", name,
                   " must have sample's dtype ", sample.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == sample.sizes(), op, ": ", name, " shape ", t.sizes(),
                    " does not match sample shape ", sample.sizes());
  TORCH_CHECK_VALUE(t.device() == sample.device(), op, ": ", name, " is on ", t.device(),
                    " but sample is on ", sample.device());
}

}  // namespace

SchedulerStepArgs prepare_scheduler_step(
    const char* op, StepKind kind, const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double coeff_x0, double coeff_second, double noise_std, c10::string_view prediction_type,
    bool clip_sample, double clip_sample_range, const std::optional<at::Tensor>& threshold) {
  TORCH_CHECK_TYPE(supported_dtype(sample.scalar_type()), op,
                   ": sample must be float32, float64 or bfloat16, got ", sample.scalar_type());
  check_like_sample(op, "model_output", model_output, sample);
  const bool has_noise = noise.has_value() && noise->defined();
  if (has_noise) check_like_sample(op, "noise", *noise, sample);
  TORCH_CHECK_VALUE(has_noise || noise_std == 0.0, op, ": noise_std is ", noise_std,
                    " but no noise tensor was given (pass noise, or noise_std=0)");
  const PredictionType pred = parse_prediction_type(op, prediction_type);
  if (clip_sample) {
    TORCH_CHECK_VALUE(clip_sample_range >= 0.0, op,
                      ": clip_sample_range must be >= 0 when clip_sample is set, got ",
                      clip_sample_range);
  }
  const bool has_threshold = threshold.has_value() && threshold->defined();

  SchedulerStepArgs a;
  if (has_threshold) {
    const at::Tensor& s = *threshold;
    TORCH_CHECK_VALUE(!clip_sample, op,
                      ": clip_sample and threshold are exclusive (diffusers applies dynamic "
                      "thresholding instead of clipping)");
    TORCH_CHECK_VALUE(sample.dim() >= 1, op,
                      ": dynamic thresholding needs a batch dim, got sample shape ",
                      sample.sizes());
    TORCH_CHECK_TYPE(s.is_floating_point(), op, ": threshold must be floating point, got ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == sample.size(0), op,
                      ": threshold must have shape [B] = [", sample.size(0), "], got ", s.sizes());
    TORCH_CHECK_VALUE(s.device() == sample.device(), op, ": threshold is on ", s.device(),
                      " but sample is on ", sample.device());
    // The kernel reads s_b in its compute dtype (float for float32/bfloat16, double for float64),
    // the dtype in which diffusers' _threshold_sample clamps and divides.
    const auto compute = sample.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    a.threshold = s.to(compute).contiguous();
  }
  a.model_output = model_output.contiguous();
  a.sample = sample.contiguous();
  if (has_noise) a.noise = noise->contiguous();

  SchedulerStepParams& p = a.params;
  p.kind = kind;
  p.prediction = pred;
  p.numel = sample.numel();
  p.row_numel = 1;
  if (has_threshold && sample.size(0) > 0) p.row_numel = sample.numel() / sample.size(0);
  if (!has_threshold) p.row_numel = std::max<int64_t>(p.numel, 1);
  p.sqrt_alpha_prod_t = sqrt_alpha_prod_t;
  p.sqrt_beta_prod_t = sqrt_beta_prod_t;
  p.coeff_x0 = coeff_x0;
  p.coeff_second = coeff_second;
  p.noise_std = noise_std;
  // Not clipping is clamping to +-inf: an exact identity that keeps NaN, as no clamp would.
  p.clip_limit = clip_sample ? clip_sample_range : std::numeric_limits<double>::infinity();
  return a;
}

std::tuple<at::Tensor, at::Tensor> scheduler_step_outputs(const at::Tensor& sample) {
  return {at::empty_like(sample, at::MemoryFormat::Contiguous),
          at::empty_like(sample, at::MemoryFormat::Contiguous)};
}

}  // namespace detail

namespace {

template <PredictionType V>
using PredC = std::integral_constant<PredictionType, V>;
template <StepKind V>
using KindC = std::integral_constant<StepKind, V>;

// Calls f(PredC, KindC) with the runtime prediction type and step kind as compile-time constants,
// so each inner loop is branch-free and vectorises.
template <typename F>
void dispatch_step(PredictionType pred, StepKind kind, F&& f) {
  auto with_kind = [&](auto p) {
    switch (kind) {
      case StepKind::kDdpm:
        return f(p, KindC<StepKind::kDdpm>{});
      case StepKind::kDdim:
        return f(p, KindC<StepKind::kDdim>{});
      case StepKind::kDdimClippedEps:
        return f(p, KindC<StepKind::kDdimClippedEps>{});
    }
  };
  switch (pred) {
    case PredictionType::kEpsilon:
      return with_kind(PredC<PredictionType::kEpsilon>{});
    case PredictionType::kSample:
      return with_kind(PredC<PredictionType::kSample>{});
    case PredictionType::kVPrediction:
      return with_kind(PredC<PredictionType::kVPrediction>{});
  }
}

// Elements [begin, end) of one sample: the clamp limit (clip range or s_b) is constant here.
template <PredictionType P, StepKind K, bool kNoise, bool kThreshold, typename T, typename C>
void step_segment(const T* __restrict__ m, const T* __restrict__ s, const T* __restrict__ n,
                  T* __restrict__ prev, T* __restrict__ x0, int64_t begin, int64_t end,
                  const math::StepCoeffs<C> k, const C lim) {
  using IO = math::StepIO<T>;
  for (int64_t i = begin; i < end; ++i) {
    C xo, mean;
    math::step_mean<P, K, kThreshold>(IO::load(m[i]), IO::load(s[i]), k, lim, xo, mean);
    if constexpr (kNoise) mean = math::add_noise(mean, IO::load(n[i]), k.noise_std);
    x0[i] = IO::store(xo);
    prev[i] = IO::store(mean);
  }
}

template <typename T, typename C, PredictionType P, StepKind K, bool kNoise, bool kThreshold>
void step_cpu_loop(const T* m, const T* s, const T* n, const C* threshold, T* prev, T* x0,
                   const SchedulerStepParams& p) {
  const math::StepCoeffs<C> k = math::StepCoeffs<C>::from(p);
  // ~64k elements per task: one thread for small latents, both cores for [8, 16, 80, 48].
  constexpr int64_t kGrain = int64_t{1} << 16;
  at::parallel_for(0, p.numel, kGrain, [&](int64_t begin, int64_t end) {
    if constexpr (!kThreshold) {
      step_segment<P, K, kNoise, false>(m, s, n, prev, x0, begin, end, k, k.clip_limit);
    } else {
      for (int64_t i = begin; i < end;) {
        const int64_t row = i / p.row_numel;
        const int64_t stop = std::min(end, (row + 1) * p.row_numel);
        step_segment<P, K, kNoise, true>(m, s, n, prev, x0, i, stop, k, threshold[row]);
        i = stop;
      }
    }
  });
}

template <typename T, typename C>
void step_cpu_typed(const detail::SchedulerStepArgs& a, at::Tensor& prev, at::Tensor& x0) {
  const T* m = reinterpret_cast<const T*>(a.model_output.const_data_ptr());
  const T* s = reinterpret_cast<const T*>(a.sample.const_data_ptr());
  const T* n = a.noise.defined() ? reinterpret_cast<const T*>(a.noise.const_data_ptr()) : nullptr;
  const C* th = a.threshold.defined() ? a.threshold.const_data_ptr<C>() : nullptr;
  T* yp = reinterpret_cast<T*>(prev.mutable_data_ptr());
  T* yx = reinterpret_cast<T*>(x0.mutable_data_ptr());
  dispatch_step(a.params.prediction, a.params.kind, [&](auto pc, auto kc) {
    constexpr PredictionType P = decltype(pc)::value;
    constexpr StepKind K = decltype(kc)::value;
    if (n != nullptr) {
      if (th != nullptr) {
        step_cpu_loop<T, C, P, K, true, true>(m, s, n, th, yp, yx, a.params);
      } else {
        step_cpu_loop<T, C, P, K, true, false>(m, s, n, th, yp, yx, a.params);
      }
    } else {
      if (th != nullptr) {
        step_cpu_loop<T, C, P, K, false, true>(m, s, n, th, yp, yx, a.params);
      } else {
        step_cpu_loop<T, C, P, K, false, false>(m, s, n, th, yp, yx, a.params);
      }
    }
  });
}

void step_cpu(const detail::SchedulerStepArgs& a, at::Tensor& prev, at::Tensor& x0) {
  if (a.params.numel == 0) return;
  switch (a.sample.scalar_type()) {
    case at::kFloat:
      return step_cpu_typed<float, float>(a, prev, x0);
    case at::kDouble:
      return step_cpu_typed<double, double>(a, prev, x0);
    case at::kBFloat16:
      static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t));
      return step_cpu_typed<uint16_t, float>(a, prev, x0);
    default:
      TORCH_CHECK(false, "unreachable: dtype checked in prepare_scheduler_step");
  }
}

std::tuple<at::Tensor, at::Tensor> run_step_cpu(const detail::SchedulerStepArgs& a) {
  auto [prev, x0] = detail::scheduler_step_outputs(a.sample);
  step_cpu(a, prev, x0);
  return {prev, x0};
}

// The CPU needs no device guard.
struct NoDeviceGuard {
  explicit NoDeviceGuard(const c10::Device&) {}
};

using CpuKernels = detail::SchedulerStepKernels<NoDeviceGuard, &run_step_cpu>;

}  // namespace

std::tuple<at::Tensor, at::Tensor> ddpm_step(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double pred_original_sample_coeff, double current_sample_coeff, double noise_std,
    const std::string& prediction_type, bool clip_sample, double clip_sample_range,
    const std::optional<at::Tensor>& threshold) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::ddpm_step", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           double, double, double, double, double, c10::string_view, bool, double,
                           const std::optional<at::Tensor>&)>();
  return op.call(model_output, sample, noise, sqrt_alpha_prod_t, sqrt_beta_prod_t,
                 pred_original_sample_coeff, current_sample_coeff, noise_std, prediction_type,
                 clip_sample, clip_sample_range, threshold);
}

std::tuple<at::Tensor, at::Tensor> ddim_step(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double sqrt_alpha_prod_t_prev, double direction_coeff, double noise_std,
    const std::string& prediction_type, bool clip_sample, double clip_sample_range,
    bool use_clipped_model_output, const std::optional<at::Tensor>& threshold) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::ddim_step", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           double, double, double, double, double, c10::string_view, bool, double,
                           bool, const std::optional<at::Tensor>&)>();
  return op.call(model_output, sample, noise, sqrt_alpha_prod_t, sqrt_beta_prod_t,
                 sqrt_alpha_prod_t_prev, direction_coeff, noise_std, prediction_type, clip_sample,
                 clip_sample_range, use_clipped_model_output, threshold);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) {
  m.impl("ddpm_step", &CpuKernels::ddpm_step);
  m.impl("ddim_step", &CpuKernels::ddim_step);
}

}  // namespace kldm
