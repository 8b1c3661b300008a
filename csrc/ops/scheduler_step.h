// SPDX-License-Identifier: MIT
// ddpm_step / ddim_step internals shared by the CPU kernel (scheduler_step.cpp) and the CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

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

}  // namespace kldm::detail
