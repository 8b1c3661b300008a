// SPDX-License-Identifier: MIT
// CUDA kernels of kldm::ddpm_step / kldm::ddim_step. Raw CUDA only (no torch headers); argument
// checks, streams and registration are in scheduler_step_cuda.cpp. The per-element formulas are
// the CPU kernel's (scheduler_math.h), with every operation rounded on its own (__*_rn).
#include <cuda_runtime.h>

#include <cstdint>

#include "../scheduler_math.h"
#include "../scheduler_step_params.h"
#include "scheduler_step_launcher.h"

namespace kldm::cuda {
namespace {

// One thread per element, grid-stride loop; consecutive threads read consecutive elements of each
// tensor (coalesced). Prediction type and step kind are template parameters (one kernel each);
// noise and thresholding are uniform runtime branches (the same for every thread).
template <typename T, PredictionType P, StepKind K>
__global__ void scheduler_step_kernel(const T* __restrict__ m, const T* __restrict__ s,
                                      const T* __restrict__ n,
                                      const typename math::StepIO<T>::compute_t* __restrict__ th,
                                      T* __restrict__ prev, T* __restrict__ x0,
                                      SchedulerStepParams p) {
  using IO = math::StepIO<T>;
  using C = typename IO::compute_t;
  const math::StepCoeffs<C> k = math::StepCoeffs<C>::from(p);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.numel;
       i += stride) {
    C xo, mean;
    if (th != nullptr) {
      math::step_mean<P, K, true>(IO::load(m[i]), IO::load(s[i]), k, th[i / p.row_numel], xo, mean);
    } else {
      math::step_mean<P, K, false>(IO::load(m[i]), IO::load(s[i]), k, k.clip_limit, xo, mean);
    }
    if (n != nullptr) mean = math::add_noise(mean, IO::load(n[i]), k.noise_std);
    x0[i] = IO::store(xo);
    prev[i] = IO::store(mean);
  }
}

template <typename T, PredictionType P, StepKind K>
cudaError_t launch_typed(const T* m, const T* s, const T* n,
                         const typename math::StepIO<T>::compute_t* th, T* prev, T* x0,
                         const SchedulerStepParams& p, int num_sms, cudaStream_t stream) {
  constexpr int threads = 256;
  // Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest.
  const int64_t want = (p.numel + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 80) * 32;
  const int blocks = static_cast<int>(want < cap ? want : cap);
  scheduler_step_kernel<T, P, K><<<blocks, threads, 0, stream>>>(m, s, n, th, prev, x0, p);
  return cudaGetLastError();
}

template <typename T, PredictionType P>
cudaError_t launch_kind(const T* m, const T* s, const T* n,
                        const typename math::StepIO<T>::compute_t* th, T* prev, T* x0,
                        const SchedulerStepParams& p, int num_sms, cudaStream_t stream) {
  switch (p.kind) {
    case StepKind::kDdpm:
      return launch_typed<T, P, StepKind::kDdpm>(m, s, n, th, prev, x0, p, num_sms, stream);
    case StepKind::kDdim:
      return launch_typed<T, P, StepKind::kDdim>(m, s, n, th, prev, x0, p, num_sms, stream);
    case StepKind::kDdimClippedEps:
      return launch_typed<T, P, StepKind::kDdimClippedEps>(m, s, n, th, prev, x0, p, num_sms,
                                                           stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch(const T* m, const T* s, const T* n,
                   const typename math::StepIO<T>::compute_t* th, T* prev, T* x0,
                   const SchedulerStepParams& p, int num_sms, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  switch (p.prediction) {
    case PredictionType::kEpsilon:
      return launch_kind<T, PredictionType::kEpsilon>(m, s, n, th, prev, x0, p, num_sms, stream);
    case PredictionType::kSample:
      return launch_kind<T, PredictionType::kSample>(m, s, n, th, prev, x0, p, num_sms, stream);
    case PredictionType::kVPrediction:
      return launch_kind<T, PredictionType::kVPrediction>(m, s, n, th, prev, x0, p, num_sms,
                                                          stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_scheduler_step(const float* model_output, const float* sample,
                                  const float* noise, const float* threshold, float* prev,
                                  float* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream) {
  return launch(model_output, sample, noise, threshold, prev, x0, p, num_sms, stream);
}
cudaError_t launch_scheduler_step(const double* model_output, const double* sample,
                                  const double* noise, const double* threshold, double* prev,
                                  double* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream) {
  return launch(model_output, sample, noise, threshold, prev, x0, p, num_sms, stream);
}
cudaError_t launch_scheduler_step(const uint16_t* model_output, const uint16_t* sample,
                                  const uint16_t* noise, const float* threshold, uint16_t* prev,
                                  uint16_t* x0, const SchedulerStepParams& p, int num_sms,
                                  cudaStream_t stream) {
  return launch(model_output, sample, noise, threshold, prev, x0, p, num_sms, stream);
}

}  // namespace kldm::cuda
