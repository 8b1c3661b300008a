// SPDX-License-Identifier: MIT
// CUDA glue of kldm::fft2c, ifft2c, sense_forward, sense_adjoint and rss: checks, device guard,
// current stream, and the CUDA passes (fused modulation kernels of fft_kernel.cu) that the shared
// drivers of fft.h chain around the cuFFT transform (ATen's _fft_c2c). Compiled by the host
// compiler.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../fft.h"
#include "device.h"
#include "fft_launcher.h"

namespace kldm {
namespace {

cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Phase tables [pre_H, pre_W, post_H, post_W] on the device, built by a small kernel.
at::Tensor phase_tables_cuda(int64_t H, int64_t W, bool inverse, const at::Tensor& like) {
  const auto real = c10::toRealValueType(like.scalar_type());
  at::Tensor tab = at::empty({4 * (H + W)}, like.options().dtype(real));
  AT_DISPATCH_FLOATING_TYPES(real, "kldm_phase_tables_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_centring_tables(tab.mutable_data_ptr<scalar_t>(), H, W, inverse,
                                                stream_of(like)));
  });
  return tab;
}

// See detail::modulate_cpu: the same pass as one CUDA kernel.
void modulate_cuda(const at::Tensor& in, const at::Tensor* maps, const at::Tensor* mask,
                   const at::Tensor& tables, bool post, const ModulateLayout& L, at::Tensor& out) {
  if (L.B * L.C * L.H * L.W == 0) return;
  const int sms = cuda::num_sms(out.device().index());
  const cudaStream_t stream = stream_of(out);
  AT_DISPATCH_COMPLEX_TYPES(out.scalar_type(), "kldm_modulate_cuda", [&] {
    using T = typename scalar_t::value_type;
    const auto o = detail::modulate_operands<T>(in, maps, tables, post, L, out);
    cudaError_t err;
    if (mask != nullptr && mask->scalar_type() == at::kBool) {
      err = cuda::launch_modulate(o.in, o.maps, mask->const_data_ptr<bool>(), o.tab_h, o.tab_w,
                                  o.out, L, sms, stream);
    } else {
      const T* m = mask != nullptr ? mask->const_data_ptr<T>() : nullptr;
      err = cuda::launch_modulate(o.in, o.maps, m, o.tab_h, o.tab_w, o.out, L, sms, stream);
    }
    C10_CUDA_CHECK(err);
  });
}

void coil_combine_cuda(const at::Tensor& z, const at::Tensor& maps, const at::Tensor& tables,
                       const CoilLayout& L, at::Tensor& out) {
  const int sms = cuda::num_sms(z.device().index());
  AT_DISPATCH_COMPLEX_TYPES(z.scalar_type(), "sense_adjoint_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* tab_h = tables.const_data_ptr<T>() + 2 * (L.H + L.W);  // post phases
    C10_CUDA_CHECK(cuda::launch_coil_combine(
        reinterpret_cast<const T*>(z.const_data_ptr<scalar_t>()),
        reinterpret_cast<const T*>(maps.const_data_ptr<scalar_t>()), tab_h, tab_h + 2 * L.H,
        reinterpret_cast<T*>(out.mutable_data_ptr<scalar_t>()), L, sms, stream_of(z)));
  });
}

constexpr detail::FftPasses kCudaFftPasses{&phase_tables_cuda, &modulate_cuda, &coil_combine_cuda};

at::Tensor centred_fft_cuda(const at::Tensor& x, bool inverse) {
  detail::check_fft2c_args(x, inverse ? "ifft2c" : "fft2c");
  const c10::cuda::CUDAGuard guard(x.device());
  return detail::run_centred_fft(x, inverse, kCudaFftPasses);
}

at::Tensor fft2c_cuda(const at::Tensor& x) { return centred_fft_cuda(x, /*inverse=*/false); }
at::Tensor ifft2c_cuda(const at::Tensor& x) { return centred_fft_cuda(x, /*inverse=*/true); }

at::Tensor sense_forward_cuda(const at::Tensor& image, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask) {
  detail::check_sense_forward_args(image, maps, mask);
  const c10::cuda::CUDAGuard guard(maps.device());
  return detail::run_sense_forward(image, maps, mask, kCudaFftPasses);
}

at::Tensor sense_adjoint_cuda(const at::Tensor& kspace, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask) {
  detail::check_sense_adjoint_args(kspace, maps, mask);
  const c10::cuda::CUDAGuard guard(kspace.device());
  return detail::run_sense_adjoint(kspace, maps, mask, kCudaFftPasses);
}

at::Tensor rss_cuda(const at::Tensor& x_in) {
  detail::check_rss_args(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const auto real = c10::toRealValueType(x.scalar_type());
  at::Tensor out = at::empty(detail::rss_shape(x), x.options().dtype(real));
  if (out.numel() == 0) return out;
  const CoilLayout L = detail::rss_layout(x);
  const int sms = cuda::num_sms(x.device().index());
  AT_DISPATCH_FLOATING_TYPES(real, "rss_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_rss(static_cast<const scalar_t*>(x.const_data_ptr()),
                                    x.is_complex(), out.mutable_data_ptr<scalar_t>(), L, sms,
                                    stream_of(x)));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kldm, CUDA, m) {
  m.impl("fft2c", &fft2c_cuda);
  m.impl("ifft2c", &ifft2c_cuda);
  m.impl("sense_forward", &sense_forward_cuda);
  m.impl("sense_adjoint", &sense_adjoint_cuda);
  m.impl("rss", &rss_cuda);
}

}  // namespace kldm
