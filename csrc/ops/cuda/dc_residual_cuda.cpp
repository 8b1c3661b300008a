// SPDX-License-Identifier: MIT
// CUDA glue of kldm::dc_residual: checks, device guard, current stream, dispatch to the raw
// launcher. Compiled by the host compiler (the kernels live in dc_residual_kernel.cu).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../dc_residual.h"
#include "dc_residual_launcher.h"

namespace kldm {
namespace {

std::tuple<at::Tensor, at::Tensor> dc_residual_cuda(const at::Tensor& pred_in,
                                                    const at::Tensor& measured_in,
                                                    const at::Tensor& mask_in) {
  detail::check_dc_residual_args(pred_in, measured_in, mask_in);
  const c10::cuda::CUDAGuard guard(pred_in.device());
  const auto io = detail::prepare_dc_residual(pred_in, measured_in, mask_in);
  if (io.pred.numel() == 0) return {io.out, io.sq_norm};
  // Per-block sums of the first pass (stream-ordered caching allocator: no sync, reused).
  const at::Tensor partial =
      at::empty({cuda::dc_residual_partial_size(io.L)}, io.pred.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(io.pred.device().index()).stream();
  AT_DISPATCH_COMPLEX_TYPES(io.pred.scalar_type(), "dc_residual_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* p = reinterpret_cast<const T*>(io.pred.const_data_ptr<scalar_t>());
    const T* q = reinterpret_cast<const T*>(io.measured.const_data_ptr<scalar_t>());
    T* r = reinterpret_cast<T*>(io.out.mutable_data_ptr<scalar_t>());
    double* part = partial.mutable_data_ptr<double>();
    T* n = io.sq_norm.mutable_data_ptr<T>();
    const at::Tensor& mask = io.mask;
    cudaError_t err;
    if (mask.scalar_type() == at::kBool) {
      err = cuda::launch_dc_residual(p, q, mask.const_data_ptr<bool>(), r, part, n, io.L, stream);
    } else {
      err = cuda::launch_dc_residual(p, q, mask.const_data_ptr<T>(), r, part, n, io.L, stream);
    }
    C10_CUDA_CHECK(err);
  });
  return {io.out, io.sq_norm};
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) { m.impl("dc_residual", &dc_residual_cuda); }

}  // namespace kldm
