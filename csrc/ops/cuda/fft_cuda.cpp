// SPDX-License-Identifier: MIT
// CUDA glue of kldm::fft2c, ifft2c, sense_forward, sense_adjoint and rss: checks, device guard,
// current stream, the cuFFT transform (through ATen's _fft_c2c) between the fused modulation
// kernels of fft_kernel.cu. Compiled by the host compiler.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../fft.h"
#include "fft_launchers.h"

namespace kldm {
namespace {

int sm_count(c10::DeviceIndex device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

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
  const int sms = sm_count(out.device().index());
  const cudaStream_t stream = stream_of(out);
  AT_DISPATCH_COMPLEX_TYPES(out.scalar_type(), "kldm_modulate_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* tab_h = tables.const_data_ptr<T>() + (post ? 2 * (L.H + L.W) : 0);
    const T* tab_w = tab_h + 2 * L.H;
    const T* x = reinterpret_cast<const T*>(in.const_data_ptr<scalar_t>());
    const T* s =
        maps != nullptr ? reinterpret_cast<const T*>(maps->const_data_ptr<scalar_t>()) : nullptr;
    T* y = reinterpret_cast<T*>(out.mutable_data_ptr<scalar_t>());
    cudaError_t err;
    if (mask != nullptr && mask->scalar_type() == at::kBool) {
      err = cuda::launch_modulate(x, s, mask->const_data_ptr<bool>(), tab_h, tab_w, y, L, sms,
                                  stream);
    } else {
      const T* m = mask != nullptr ? mask->const_data_ptr<T>() : nullptr;
      err = cuda::launch_modulate(x, s, m, tab_h, tab_w, y, L, sms, stream);
    }
    C10_CUDA_CHECK(err);
  });
}

at::Tensor centred_fft_cuda(const at::Tensor& x_in, bool inverse) {
  detail::check_fft2c_args(x_in, inverse ? "ifft2c" : "fft2c");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t nd = x.dim();
  const int64_t H = x.size(nd - 2);
  const int64_t W = x.size(nd - 1);
  if (x.numel() == 0) return at::empty_like(x, at::MemoryFormat::Contiguous);
  const ModulateLayout L = detail::fft2c_layout(x);
  const at::Tensor tables = phase_tables_cuda(H, W, inverse, x);
  at::Tensor buf = at::empty_like(x, at::MemoryFormat::Contiguous);
  modulate_cuda(x, nullptr, nullptr, tables, /*post=*/false, L, buf);
  at::Tensor out = detail::fft2_ortho(buf, inverse);
  modulate_cuda(out, nullptr, nullptr, tables, /*post=*/true, L, out);
  return out;
}

at::Tensor fft2c_cuda(const at::Tensor& x) { return centred_fft_cuda(x, /*inverse=*/false); }
at::Tensor ifft2c_cuda(const at::Tensor& x) { return centred_fft_cuda(x, /*inverse=*/true); }

at::Tensor sense_forward_cuda(const at::Tensor& image_in, const at::Tensor& maps_in,
                              const std::optional<at::Tensor>& mask_in) {
  detail::check_sense_forward_args(image_in, maps_in, mask_in);
  const c10::cuda::CUDAGuard guard(maps_in.device());
  const at::Tensor image = (image_in.dim() == 3 ? image_in.unsqueeze(1) : image_in).contiguous();
  int64_t maps_sb = 0;
  const at::Tensor maps = detail::sense_maps(maps_in, maps_sb);
  ModulateLayout L = detail::sense_forward_layout(image, maps, maps_sb);
  const std::vector<int64_t> shape = {L.B, L.C, L.H, L.W};
  if (image.numel() == 0 || maps.numel() == 0) return at::empty(shape, image.options());
  const at::Tensor tables = phase_tables_cuda(L.H, L.W, /*inverse=*/false, image);
  L.in_sb = L.H * L.W;
  L.in_sc = 0;  // the image is broadcast over the coils
  at::Tensor buf = at::empty(shape, image.options());
  modulate_cuda(image, &maps, nullptr, tables, /*post=*/false, L, buf);
  at::Tensor out = detail::fft2_ortho(buf, /*inverse=*/false);
  ModulateLayout P = L;
  P.in_sb = L.C * L.H * L.W;
  P.in_sc = L.H * L.W;
  at::Tensor mask;
  if (mask_in.has_value()) {
    mask = detail::sense_mask(*mask_in, shape, c10::toRealValueType(out.scalar_type()), P);
  }
  modulate_cuda(out, nullptr, mask.defined() ? &mask : nullptr, tables, /*post=*/true, P, out);
  return out;
}

at::Tensor sense_adjoint_cuda(const at::Tensor& kspace_in, const at::Tensor& maps_in,
                              const std::optional<at::Tensor>& mask_in) {
  detail::check_sense_adjoint_args(kspace_in, maps_in, mask_in);
  const c10::cuda::CUDAGuard guard(kspace_in.device());
  const at::Tensor kspace = kspace_in.contiguous();
  int64_t maps_sb = 0;
  const at::Tensor maps = detail::sense_maps(maps_in, maps_sb);
  ModulateLayout L = detail::sense_adjoint_layout(kspace);
  at::Tensor out = at::empty({L.B, 1, L.H, L.W}, kspace.options());
  if (out.numel() == 0) return out;
  if (L.C == 0) return out.zero_();
  const at::Tensor tables = phase_tables_cuda(L.H, L.W, /*inverse=*/true, kspace);
  at::Tensor mask;
  if (mask_in.has_value()) {
    mask =
        detail::sense_mask(*mask_in, kspace.sizes(), c10::toRealValueType(kspace.scalar_type()), L);
  }
  at::Tensor buf = at::empty_like(kspace, at::MemoryFormat::Contiguous);
  modulate_cuda(kspace, nullptr, mask.defined() ? &mask : nullptr, tables, /*post=*/false, L, buf);
  const at::Tensor z = detail::fft2_ortho(buf, /*inverse=*/true);
  CoilLayout CL;
  CL.B = L.B;
  CL.C = L.C;
  CL.H = L.H;
  CL.W = L.W;
  CL.maps_sb = maps_sb;
  CL.even = L.even;
  const int sms = sm_count(kspace.device().index());
  AT_DISPATCH_COMPLEX_TYPES(z.scalar_type(), "sense_adjoint_cuda", [&] {
    using T = typename scalar_t::value_type;
    const T* tab_h = tables.const_data_ptr<T>() + 2 * (L.H + L.W);  // post phases
    C10_CUDA_CHECK(cuda::launch_coil_combine(
        reinterpret_cast<const T*>(z.const_data_ptr<scalar_t>()),
        reinterpret_cast<const T*>(maps.const_data_ptr<scalar_t>()), tab_h, tab_h + 2 * L.H,
        reinterpret_cast<T*>(out.mutable_data_ptr<scalar_t>()), CL, sms, stream_of(z)));
  });
  return out;
}

at::Tensor rss_cuda(const at::Tensor& x_in) {
  detail::check_rss_args(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const auto real = c10::toRealValueType(x.scalar_type());
  at::Tensor out = at::empty(detail::rss_shape(x), x.options().dtype(real));
  if (out.numel() == 0) return out;
  const CoilLayout L = detail::rss_layout(x);
  const int sms = sm_count(x.device().index());
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
