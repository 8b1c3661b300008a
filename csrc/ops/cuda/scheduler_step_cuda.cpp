// SPDX-License-Identifier: MIT
// CUDA glue of kldm::ddpm_step / kldm::ddim_step: checks, device guard, current stream, dispatch
// to the raw launcher. Compiled by the host compiler (the kernels live in
// scheduler_step_kernel.cu).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "../scheduler_step.h"
#include "device.h"
#include "scheduler_step_launcher.h"

namespace kldm {
namespace {

template <typename T, typename C>
cudaError_t launch_as(const detail::SchedulerStepArgs& a, at::Tensor& prev, at::Tensor& x0, int sms,
                      cudaStream_t stream) {
  const auto* m = reinterpret_cast<const T*>(a.model_output.const_data_ptr());
  const auto* s = reinterpret_cast<const T*>(a.sample.const_data_ptr());
  const T* n = a.noise.defined() ? reinterpret_cast<const T*>(a.noise.const_data_ptr()) : nullptr;
  const C* th = a.threshold.defined() ? a.threshold.const_data_ptr<C>() : nullptr;
  return cuda::launch_scheduler_step(m, s, n, th, reinterpret_cast<T*>(prev.mutable_data_ptr()),
                                     reinterpret_cast<T*>(x0.mutable_data_ptr()), a.params, sms,
                                     stream);
}

std::tuple<at::Tensor, at::Tensor> step_cuda(const detail::SchedulerStepArgs& a) {
  const c10::cuda::CUDAGuard guard(a.sample.device());
  auto [prev, x0] = detail::scheduler_step_outputs(a.sample);
  if (a.params.numel == 0) return {prev, x0};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.sample.device().index()).stream();
  const int sms = cuda::num_sms(a.sample.device().index());
  cudaError_t err = cudaSuccess;
  switch (a.sample.scalar_type()) {
    case at::kFloat:
      err = launch_as<float, float>(a, prev, x0, sms, stream);
      break;
    case at::kDouble:
      err = launch_as<double, double>(a, prev, x0, sms, stream);
      break;
    case at::kBFloat16:
      static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t));
      err = launch_as<uint16_t, float>(a, prev, x0, sms, stream);
      break;
    default:
      TORCH_CHECK(false, "unreachable: dtype checked in prepare_scheduler_step");
  }
  C10_CUDA_CHECK(err);
  return {prev, x0};
}

using CudaKernels = detail::SchedulerStepKernels<c10::cuda::CUDAGuard, &step_cuda>;

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) {
  m.impl("ddpm_step", &CudaKernels::ddpm_step);
  m.impl("ddim_step", &CudaKernels::ddim_step);
}

}  // namespace kldm
