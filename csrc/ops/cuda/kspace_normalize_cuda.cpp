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
#include "kspace_normalize_launcher.h"

namespace kldm {
namespace {

int num_sms(c10::DeviceIndex device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kspace_normalize_cuda(
    const at::Tensor& kspace_in, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& std_in, double eps) {
  detail::check_kspace_normalize_args(kspace_in, mean_in, std_in, eps);
  const c10::cuda::CUDAGuard guard(kspace_in.device());
  const at::Tensor kspace = kspace_in.contiguous();
  const int64_t B = kspace.size(0), C = kspace.size(1), H = kspace.size(2), W = kspace.size(3);
  const auto real_opts = kspace.options().dtype(c10::toRealValueType(kspace.scalar_type()));
  at::Tensor out = at::empty({B, 2 * C, H, W}, real_opts);
  const bool given = mean_in.has_value();
  at::Tensor mean =
      given ? detail::expand_stat(*mean_in, B, 2 * C) : at::empty({B, 2 * C, 1, 1}, real_opts);
  at::Tensor stddev =
      given ? detail::expand_stat(*std_in, B, 2 * C) : at::empty({B, 2 * C, 1, 1}, real_opts);
  const NormalizeLayout L = detail::normalize_layout(B, C, H, W);
  if (L.planes == 0) return {out, mean, stddev};
  at::Tensor partial;  // per-block moments of the statistics pass
  if (!given) {
    partial = at::empty({cuda::normalize_partial_size(L)}, kspace.options().dtype(at::kDouble));
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(kspace.device().index()).stream();
  const int sms = num_sms(kspace.device().index());
  AT_DISPATCH_COMPLEX_TYPES(kspace.scalar_type(), "kspace_normalize_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* z = reinterpret_cast<const T*>(kspace.const_data_ptr<scalar_t>());
    T* m = mean.mutable_data_ptr<T>();
    T* s = stddev.mutable_data_ptr<T>();
    if (given) {
      C10_CUDA_CHECK(cuda::launch_effective_std(s, 2 * L.planes, static_cast<T>(eps), stream));
    } else {
      C10_CUDA_CHECK(cuda::launch_normalize_stats(z, partial.mutable_data_ptr<double>(), m, s,
                                                  static_cast<T>(eps), L, stream));
    }
    C10_CUDA_CHECK(
        cuda::launch_normalize_write(z, m, s, out.mutable_data_ptr<T>(), L, sms, stream));
  });
  return {out, mean, stddev};
}

at::Tensor kspace_denormalize_cuda(const at::Tensor& x_in, const at::Tensor& mean_in,
                                   const at::Tensor& std_in) {
  detail::check_kspace_denormalize_args(x_in, mean_in, std_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C2 = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor mean = detail::expand_stat(mean_in, B, C2);
  const at::Tensor stddev = detail::expand_stat(std_in, B, C2);
  at::Tensor out =
      at::empty({B, C2 / 2, H, W}, x.options().dtype(c10::toComplexType(x.scalar_type())));
  if (out.numel() == 0) return out;
  const NormalizeLayout L = detail::normalize_layout(B, C2 / 2, H, W);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const int sms = num_sms(x.device().index());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kspace_denormalize_cuda", [&] {
    using T = scalar_t;
    C10_CUDA_CHECK(cuda::launch_denormalize(
        x.const_data_ptr<T>(), mean.const_data_ptr<T>(), stddev.const_data_ptr<T>(),
        reinterpret_cast<T*>(out.mutable_data_ptr<c10::complex<T>>()), L, sms, stream));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) {
  m.impl("kspace_normalize", &kspace_normalize_cuda);
  m.impl("kspace_denormalize", &kspace_denormalize_cuda);
}

}  // namespace kldm
