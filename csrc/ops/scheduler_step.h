// SPDX-License-Identifier: MIT
// ddpm_step / ddim_step internals shared by the CPU kernel (scheduler_step.cpp) and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

#include "scheduler_step_params.h"

namespace kldm::detail {

// The arguments of one fused step, after validation: contiguous inputs (noise/threshold undefined
// when absent, threshold converted to the compute dtype) and the plain kernel parameters.
struct SchedulerStepArgs {
  at::Tensor model_output;
  at::Tensor sample;
  at::Tensor noise;      // undefined: no noise term
  at::Tensor threshold;  // undefined: no dynamic thresholding; else [B] in the compute dtype
  SchedulerStepParams params;
};

// Validates dtypes (float32/float64/bfloat16, all alike), shapes, devices, prediction_type, the
// clip range and the threshold with messages that name the argument and its shape
// (TypeError/ValueError in Python), and packs the arguments. `op` names the op in the messages.
SchedulerStepArgs prepare_scheduler_step(
    const char* op, StepKind kind, const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double coeff_x0, double coeff_second, double noise_std, c10::string_view prediction_type,
    bool clip_sample, double clip_sample_range, const std::optional<at::Tensor>& threshold);

// The two outputs (prev_sample, pred_original_sample): contiguous, like sample.
std::tuple<at::Tensor, at::Tensor> scheduler_step_outputs(const at::Tensor& sample);

// The ddpm_step / ddim_step kernels of one device, taking the schema's arguments: under a `Guard`
// of sample's device, the arguments are validated and packed (prepare_scheduler_step) and `Run`,
// the device's step, returns (prev_sample, pred_original_sample).
template <typename Guard, std::tuple<at::Tensor, at::Tensor> (*Run)(const SchedulerStepArgs&)>
struct SchedulerStepKernels {
  static std::tuple<at::Tensor, at::Tensor> ddpm_step(
      const at::Tensor& model_output, const at::Tensor& sample,
      const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
      double pred_original_sample_coeff, double current_sample_coeff, double noise_std,
      c10::string_view prediction_type, bool clip_sample, double clip_sample_range,
      const std::optional<at::Tensor>& threshold) {
    const Guard guard(sample.device());
    return Run(prepare_scheduler_step("ddpm_step", StepKind::kDdpm, model_output, sample, noise,
                                      sqrt_alpha_prod_t, sqrt_beta_prod_t,
                                      pred_original_sample_coeff, current_sample_coeff, noise_std,
                                      prediction_type, clip_sample, clip_sample_range, threshold));
  }

  static std::tuple<at::Tensor, at::Tensor> ddim_step(
      const at::Tensor& model_output, const at::Tensor& sample,
      const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
      double sqrt_alpha_prod_t_prev, double direction_coeff, double noise_std,
      c10::string_view prediction_type, bool clip_sample, double clip_sample_range,
      bool use_clipped_model_output, const std::optional<at::Tensor>& threshold) {
    const Guard guard(sample.device());
    return Run(prepare_scheduler_step(
        "ddim_step", use_clipped_model_output ? StepKind::kDdimClippedEps : StepKind::kDdim,
        model_output, sample, noise, sqrt_alpha_prod_t, sqrt_beta_prod_t, sqrt_alpha_prod_t_prev,
        direction_coeff, noise_std, prediction_type, clip_sample, clip_sample_range, threshold));
  }
};

}  // namespace kldm::detail
