// SPDX-License-Identifier: MIT
// Plain launchers of the fused scheduler-step CUDA kernels (no torch types), called by
// scheduler_step_cuda.cpp. bfloat16 tensors are passed as their uint16_t bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../scheduler_step_params.h"

namespace kldm::cuda {

// noise and threshold may be null (no noise term / no dynamic thresholding); threshold holds one
// limit per sample, in the compute type. Writes prev_sample and pred_original_sample (x0).
cudaError_t launch_scheduler_step(const float* model_output, const float* sample,
                                  const float* noise, const float* threshold, float* prev,
                                  float* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream);
cudaError_t launch_scheduler_step(const double* model_output, const double* sample,
                                  const double* noise, const double* threshold, double* prev,
                                  double* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream);
cudaError_t launch_scheduler_step(const uint16_t* model_output, const uint16_t* sample,
                                  const uint16_t* noise, const float* threshold, uint16_t* prev,
                                  uint16_t* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream);

}  // namespace kldm::cuda
