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
#include "scheduler_step_launchers.h"

namespace kldm {
namespace {

int num_sms(c10::DeviceIndex device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

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
  const int sms = num_sms(a.sample.device().index());
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

std::tuple<at::Tensor, at::Tensor> ddpm_step_cuda(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double pred_original_sample_coeff, double current_sample_coeff, double noise_std,
    c10::string_view prediction_type, bool clip_sample, double clip_sample_range,
    const std::optional<at::Tensor>& threshold) {
  const c10::cuda::CUDAGuard guard(sample.device());
  return step_cuda(detail::prepare_scheduler_step(
      "ddpm_step", StepKind::kDdpm, model_output, sample, noise, sqrt_alpha_prod_t,
      sqrt_beta_prod_t, pred_original_sample_coeff, current_sample_coeff, noise_std,
      prediction_type, clip_sample, clip_sample_range, threshold));
}

std::tuple<at::Tensor, at::Tensor> ddim_step_cuda(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double sqrt_alpha_prod_t_prev, double direction_coeff, double noise_std,
    c10::string_view prediction_type, bool clip_sample, double clip_sample_range,
    bool use_clipped_model_output, const std::optional<at::Tensor>& threshold) {
  const c10::cuda::CUDAGuard guard(sample.device());
  return step_cuda(detail::prepare_scheduler_step(
      "ddim_step", use_clipped_model_output ? StepKind::kDdimClippedEps : StepKind::kDdim,
      model_output, sample, noise, sqrt_alpha_prod_t, sqrt_beta_prod_t, sqrt_alpha_prod_t_prev,
      direction_coeff, noise_std, prediction_type, clip_sample, clip_sample_range, threshold));
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) {
  m.impl("ddpm_step", &ddpm_step_cuda);
  m.impl("ddim_step", &ddim_step_cuda);
}

}  // namespace kldm
