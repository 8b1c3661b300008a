// SPDX-License-Identifier: MIT
// Plain launchers of the dc_project CUDA kernels (dc_project_kernel.cu; no torch types), called by
// dc_project_cuda.cpp.
// Complex data are interleaved (re, im) pairs of the real type.
#pragma once

#include <cuda_runtime.h>

#include "../dc_project_layout.h"

namespace kldm::cuda {

cudaError_t launch_dc_project(const float* pred, const float* meas, const bool* mask, float weight,
                              float* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream);
cudaError_t launch_dc_project(const float* pred, const float* meas, const float* mask, float weight,
                              float* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream);
cudaError_t launch_dc_project(const double* pred, const double* meas, const bool* mask,
                              double weight, double* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream);
cudaError_t launch_dc_project(const double* pred, const double* meas, const double* mask,
                              double weight, double* out, const DcProjectLayout& L, int num_sms,
                              cudaStream_t stream);

}  // namespace kldm::cuda
