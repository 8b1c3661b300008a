// SPDX-License-Identifier: MIT
// Plain (torch-free) description of one fused scheduler step, shared by the CPU loop and the CUDA
// launcher of kldm::ddpm_step / kldm::ddim_step.
//
// model_output, sample, noise, prev_sample and pred_original_sample are contiguous with `numel`
// elements. With dynamic thresholding, sample b (elements [b * row_numel, (b + 1) * row_numel)) is
// clamped to [-s_b, s_b] and divided by s_b, s_b read from a per-sample threshold array.
#pragma once

#include <cstdint>

namespace kldm {

// diffusers' `prediction_type`: what the model predicts.
enum class PredictionType : int { kEpsilon = 0, kSample = 1, kVPrediction = 2 };

// Which posterior-mean formula the step uses.
//   kDdpm:           mean = coeff_x0 * x0 + coeff_second * sample            (DDPM eq. 7)
//   kDdim:           mean = coeff_x0 * x0 + coeff_second * eps               (DDIM eq. 12)
//   kDdimClippedEps: as kDdim, eps re-derived from the clipped x0 (use_clipped_model_output)
enum class StepKind : int { kDdpm = 0, kDdim = 1, kDdimClippedEps = 2 };

struct SchedulerStepParams {
  StepKind kind = StepKind::kDdpm;
  PredictionType prediction = PredictionType::kEpsilon;
  int64_t numel = 0;      // elements of each tensor
  int64_t row_numel = 1;  // elements per sample (per threshold entry); numel when not thresholding
  // Host-computed per-step coefficients (see ops.h for their diffusers definitions). The kernels
  // cast them to the compute type (float for float32/bfloat16, double for float64).
  double sqrt_alpha_prod_t = 1.0;
  double sqrt_beta_prod_t = 0.0;
  double coeff_x0 = 0.0;      // DDPM: pred_original_sample_coeff; DDIM: sqrt(alpha_prod_t_prev)
  double coeff_second = 0.0;  // DDPM: current_sample_coeff;      DDIM: direction coefficient
  double noise_std = 0.0;     // multiplies the noise (used only when noise is given)
  // clip_sample: x0 is clamped to [-clip_limit, clip_limit]; +inf when not clipping, which makes
  // the clamp an exact identity (NaN still propagates, as in torch.clamp).
  double clip_limit = 0.0;
};

}  // namespace kldm
