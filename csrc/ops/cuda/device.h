// SPDX-License-Identifier: MIT
// Device queries shared by the CUDA glue (*_cuda.cpp: torch headers, host compiler only).
#pragma once

#include <c10/core/Device.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

namespace kldm::cuda {

// Number of streaming multiprocessors of `device` (the launchers size their grids by it).
inline int num_sms(c10::DeviceIndex device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace kldm::cuda
