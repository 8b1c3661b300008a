// SPDX-License-Identifier: MIT
// CUDA glue of kldm::dc_project: checks, device guard, current stream, dispatch to the raw
// launcher. Compiled by the host compiler (the kernels live in dc_project_kernel.cu).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../dc_project.h"
#include "dc_project_launcher.h"
#include "device.h"

namespace kldm {
namespace {

at::Tensor dc_project_cuda(const at::Tensor& pred_in, const at::Tensor& measured_in,
                           const at::Tensor& mask_in, double weight) {
  detail::check_dc_project_args(pred_in, measured_in, mask_in, weight);
  const c10::cuda::CUDAGuard guard(pred_in.device());
  const auto io = detail::prepare_masked_kspace(pred_in, measured_in, mask_in);
  const DcProjectLayout L = detail::dc_project_layout(io.pred, io.mask);
  if (io.pred.numel() == 0) return io.out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(io.pred.device().index()).stream();
  const int sms = cuda::num_sms(io.pred.device().index());
  AT_DISPATCH_COMPLEX_TYPES(io.pred.scalar_type(), "dc_project_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* p = reinterpret_cast<const T*>(io.pred.const_data_ptr<scalar_t>());
    const T* q = reinterpret_cast<const T*>(io.measured.const_data_ptr<scalar_t>());
    T* y = reinterpret_cast<T*>(io.out.mutable_data_ptr<scalar_t>());
    const at::Tensor& mask = io.mask;
    cudaError_t err;
    if (mask.scalar_type() == at::kBool) {
      err = cuda::launch_dc_project(p, q, mask.const_data_ptr<bool>(), static_cast<T>(weight), y, L,
                                    sms, stream);
    } else {
      err = cuda::launch_dc_project(p, q, mask.const_data_ptr<T>(), static_cast<T>(weight), y, L,
                                    sms, stream);
    }
    C10_CUDA_CHECK(err);
  });
  return io.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) { m.impl("dc_project", &dc_project_cuda); }

}  // namespace kldm
