// SPDX-License-Identifier: MIT
// CUDA glue of kldm::kspace_normalize / kldm::kspace_denormalize: checks, device guard, current
// stream, dispatch to the raw launchers. Compiled by the host compiler (kernels:
// kspace_normalize_kernel.cu).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../kspace_normalize.h"
#include "device.h"
#include "kspace_normalize_launcher.h"

namespace kldm {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> kspace_normalize_cuda(
    const at::Tensor& kspace_in, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& std_in, double eps) {
  detail::check_kspace_normalize_args(kspace_in, mean_in, std_in, eps);
  const c10::cuda::CUDAGuard guard(kspace_in.device());
  auto io = detail::prepare_kspace_normalize(kspace_in, mean_in, std_in);
  const NormalizeLayout& L = io.L;
  if (L.planes == 0) return {io.out, io.mean, io.stddev};
  const at::Tensor& kspace = io.kspace;
  at::Tensor partial;  // per-block moments of the statistics pass
  if (!io.given) {
    partial = at::empty({cuda::normalize_partial_size(L)}, kspace.options().dtype(at::kDouble));
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(kspace.device().index()).stream();
  const int sms = cuda::num_sms(kspace.device().index());
  AT_DISPATCH_COMPLEX_TYPES(kspace.scalar_type(), "kspace_normalize_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* z = reinterpret_cast<const T*>(kspace.const_data_ptr<scalar_t>());
    T* m = io.mean.mutable_data_ptr<T>();
    T* s = io.stddev.mutable_data_ptr<T>();
    if (io.given) {
      C10_CUDA_CHECK(cuda::launch_effective_std(s, 2 * L.planes, static_cast<T>(eps), stream));
    } else {
      C10_CUDA_CHECK(cuda::launch_normalize_stats(z, partial.mutable_data_ptr<double>(), m, s,
                                                  static_cast<T>(eps), L, stream));
    }
    C10_CUDA_CHECK(
        cuda::launch_normalize_write(z, m, s, io.out.mutable_data_ptr<T>(), L, sms, stream));
  });
  return {io.out, io.mean, io.stddev};
}

at::Tensor kspace_denormalize_cuda(const at::Tensor& x_in, const at::Tensor& mean_in,
                                   const at::Tensor& std_in) {
  detail::check_kspace_denormalize_args(x_in, mean_in, std_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto io = detail::prepare_kspace_denormalize(x_in, mean_in, std_in);
  if (io.out.numel() == 0) return io.out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(io.x.device().index()).stream();
  const int sms = cuda::num_sms(io.x.device().index());
  AT_DISPATCH_FLOATING_TYPES(io.x.scalar_type(), "kspace_denormalize_cuda", [&] {
    using T = scalar_t;
    C10_CUDA_CHECK(cuda::launch_denormalize(
        io.x.const_data_ptr<T>(), io.mean.const_data_ptr<T>(), io.stddev.const_data_ptr<T>(),
        reinterpret_cast<T*>(io.out.mutable_data_ptr<c10::complex<T>>()), io.L, sms, stream));
  });
  return io.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) {
  m.impl("kspace_normalize", &kspace_normalize_cuda);
  m.impl("kspace_denormalize", &kspace_denormalize_cuda);
}

}  // namespace kldm
