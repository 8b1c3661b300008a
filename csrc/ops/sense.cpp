// SPDX-License-Identifier: MIT
// kldm::sense_forward, kldm::sense_adjoint and kldm::rss: the SENSE operator pair built on the
// modulated centred FFT of fft.cpp, and root-sum-of-squares (their argument checks, the SENSE
// drivers shared with the CUDA glue, and the CPU kernels).
//
// sense_forward: buf = pre * (maps * image)   [one pass, fused]  -> FFT -> out *= post * mask
// sense_adjoint: buf = pre * mask * kspace    [one pass, fused]  -> inverse FFT ->
//                out = post * sum_c conj(maps_c) * z_c            [one pass, fused coil sum]
// The post phase depends on (h, w) only, so in the adjoint it is applied once, after the coil sum.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fft.h"
#include "kldm/ops.h"

namespace kldm {
namespace detail {

// ---- argument checks (declared in fft.h) ----

namespace {

void check_complex_4d(const at::Tensor& t, const char* op, const char* name, const char* layout) {
  TORCH_CHECK_TYPE(is_complex64_or_128(t), op, ": ", name, " must be complex64 or complex128 ",
                   layout, ", got ", t.scalar_type(), " with shape ", t.sizes());
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be 4-D ", layout, ", got shape ",
                    t.sizes());
}

// x is [B, C_x, H, W] with C_x = C (coil data) or 1 (image); maps [B or 1, C, H, W].
void check_against_maps(const at::Tensor& x, const at::Tensor& maps, const char* op,
                        const char* name, bool coils) {
  TORCH_CHECK_TYPE(x.scalar_type() == maps.scalar_type(), op, ": ", name, " dtype ",
                   x.scalar_type(), " differs from maps dtype ", maps.scalar_type());
  const int64_t c = coils ? maps.size(1) : 1;
  TORCH_CHECK_VALUE(x.size(1) == c && x.size(2) == maps.size(2) && x.size(3) == maps.size(3), op,
                    ": ", name, " shape ", x.sizes(), " does not match maps shape ", maps.sizes(),
                    ": expected [", x.size(0), ", ", c, ", ", maps.size(2), ", ", maps.size(3),
                    "]");
  TORCH_CHECK_VALUE(maps.size(0) == 1 || maps.size(0) == x.size(0), op, ": ", name, " batch ",
                    x.size(0), " does not match maps batch ", maps.size(0),
                    " (maps batch must be 1, shared, or ", x.size(0), "); maps shape ",
                    maps.sizes());
  TORCH_CHECK_VALUE(x.device() == maps.device(), op, ": ", name, " is on ", x.device(),
                    " but maps is on ", maps.device());
}

}  // namespace

void check_sense_mask(const at::Tensor& mask, at::IntArrayRef shape, const at::Device& device,
                      const char* op) {
  TORCH_CHECK_TYPE(!mask.is_complex(), op, ": mask must be bool or real, got ", mask.scalar_type(),
                   " with shape ", mask.sizes());
  TORCH_CHECK_VALUE(mask.dim() == 1 || mask.dim() == 2 || mask.dim() == 4, op,
                    ": mask must be [W], [H, W] or 4-D [B|1, C|1, H|1, W|1], got shape ",
                    mask.sizes(), " (for per-sample column masks use [B, 1, 1, W])");
  const auto ms = mask.sizes();
  for (int64_t i = 1; i <= mask.dim(); ++i) {
    const int64_t m = ms[mask.dim() - i];
    const int64_t k = shape[4 - i];
    TORCH_CHECK_VALUE(m == k || m == 1, op, ": mask shape ", ms,
                      " does not broadcast to k-space shape ", shape, " (dim -", i, ": ", m, " vs ",
                      k, ")");
  }
  TORCH_CHECK_VALUE(mask.device() == device, op, ": mask is on ", mask.device(),
                    " but the data are on ", device);
}

void check_sense_forward_args(const at::Tensor& image, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask) {
  constexpr const char* op = "sense_forward";
  check_complex_4d(maps, op, "maps", "[B, C, H, W]");
  TORCH_CHECK_TYPE(is_complex64_or_128(image), op,
                   ": image must be complex64 or complex128 [B, 1, H, W] or [B, H, W], got ",
                   image.scalar_type(), " with shape ", image.sizes());
  TORCH_CHECK_VALUE(image.dim() == 3 || image.dim() == 4, op,
                    ": image must be [B, 1, H, W] or [B, H, W], got shape ", image.sizes());
  const at::Tensor image4 = image.dim() == 3 ? image.unsqueeze(1) : image;
  check_against_maps(image4, maps, op, "image", /*coils=*/false);
  if (mask.has_value()) {
    check_sense_mask(*mask, {image4.size(0), maps.size(1), maps.size(2), maps.size(3)},
                     maps.device(), op);
  }
}

void check_sense_adjoint_args(const at::Tensor& kspace, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask) {
  constexpr const char* op = "sense_adjoint";
  check_complex_4d(maps, op, "maps", "[B, C, H, W]");
  check_complex_4d(kspace, op, "kspace", "[B, C, H, W]");
  check_against_maps(kspace, maps, op, "kspace", /*coils=*/true);
  if (mask.has_value()) check_sense_mask(*mask, kspace.sizes(), kspace.device(), op);
}

void check_rss_args(const at::Tensor& x) {
  TORCH_CHECK_TYPE(x.is_complex() || x.is_floating_point(),
                   "rss: coil_images must be a real or complex floating-point [..., C, H, W] "
                   "tensor, got ",
                   x.scalar_type(), " with shape ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() != at::kComplexHalf && x.scalar_type() != at::kHalf &&
                       x.scalar_type() != at::kBFloat16,
                   "rss: coil_images must be float32, float64, complex64 or complex128, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 3 && x.dim() <= 3 + kMaxFftLeadingDims,
                    "rss: coil_images must be [..., C, H, W] with 3 to ", 3 + kMaxFftLeadingDims,
                    " dims, got shape ", x.sizes());
}

std::vector<int64_t> rss_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.erase(shape.end() - 3);
  return shape;
}

CoilLayout rss_layout(const at::Tensor& x) {
  CoilLayout L;
  const int64_t nd = x.dim();
  L.C = x.size(nd - 3);
  L.H = x.size(nd - 2);
  L.W = x.size(nd - 1);
  L.B = 1;
  for (int64_t d = 0; d < nd - 3; ++d) L.B *= x.size(d);
  return L;
}

}  // namespace detail

namespace {

int64_t line_grain(int64_t W, int64_t C) {
  // About 32k complex elements read per task.
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(W * C, 1));
}

// out[b, h, :] = phase(h, :) * sum_c conj(maps[b, c, h, :]) * z[b, c, h, :], accumulated in the
// output line (which stays in L1) coil after coil; coils are summed in order c = 0, 1, ...
template <typename T>
void coil_combine_cpu_loop(const T* z, const T* maps, const T* tab_h, const T* tab_w, T* out,
                           const CoilLayout& L) {
  const int64_t W = L.W;
  const int64_t plane = L.H * W;
  at::parallel_for(0, L.B * L.H, line_grain(W, L.C), [&](int64_t begin, int64_t end) {
    for (int64_t line = begin; line < end; ++line) {
      const int64_t b = line / L.H;
      const int64_t h = line % L.H;
      T* y = out + 2 * line * W;
      std::fill(y, y + 2 * W, T(0));
      for (int64_t c = 0; c < L.C; ++c) {
        const T* zc = z + 2 * ((b * L.C + c) * plane + h * W);
        const T* sc = maps + 2 * (b * L.maps_sb + c * plane + h * W);
        for (int64_t w = 0; w < W; ++w) math::cmul_conj_acc(sc + 2 * w, zc + 2 * w, y + 2 * w);
      }
      if (L.even) {
        const T sh = tab_h[2 * h];
        for (int64_t w = 0; w < W; ++w) {
          const T s = sh * tab_w[2 * w];
          y[2 * w] *= s;
          y[2 * w + 1] *= s;
        }
      } else {
        for (int64_t w = 0; w < W; ++w) {
          T p[2];
          math::phase_hw(tab_h, tab_w, h, w, p);
          math::cmul(y + 2 * w, p, y + 2 * w);
        }
      }
    }
  });
}

// out[b, h, w] = sqrt(sum_c |x[b, c, h, w]|^2); S = 2 for complex (re, im pairs), 1 for real.
template <typename T, int S>
void rss_cpu_loop(const T* x, T* out, const CoilLayout& L) {
  const int64_t W = L.W;
  const int64_t plane = L.H * W;
  at::parallel_for(0, L.B * L.H, line_grain(W, L.C), [&](int64_t begin, int64_t end) {
    for (int64_t line = begin; line < end; ++line) {
      const int64_t b = line / L.H;
      const int64_t h = line % L.H;
      T* y = out + line * W;
      std::fill(y, y + W, T(0));
      for (int64_t c = 0; c < L.C; ++c) {
        const T* xc = x + S * ((b * L.C + c) * plane + h * W);
        for (int64_t w = 0; w < W; ++w) {
          T acc = xc[S * w] * xc[S * w];
          if constexpr (S == 2) acc += xc[2 * w + 1] * xc[2 * w + 1];
          y[w] += acc;
        }
      }
      for (int64_t w = 0; w < W; ++w) y[w] = std::sqrt(y[w]);
    }
  });
}

}  // namespace

namespace detail {

void coil_combine_cpu(const at::Tensor& z, const at::Tensor& maps, const at::Tensor& tables,
                      const CoilLayout& L, at::Tensor& out) {
  AT_DISPATCH_COMPLEX_TYPES(z.scalar_type(), "sense_adjoint_cpu", [&] {
    using T = typename scalar_t::value_type;
    const T* tab_h = tables.const_data_ptr<T>() + 2 * (L.H + L.W);  // post phases
    coil_combine_cpu_loop<T>(reinterpret_cast<const T*>(z.const_data_ptr<scalar_t>()),
                             reinterpret_cast<const T*>(maps.const_data_ptr<scalar_t>()), tab_h,
                             tab_h + 2 * L.H,
                             reinterpret_cast<T*>(out.mutable_data_ptr<scalar_t>()), L);
  });
}

at::Tensor run_sense_forward(const at::Tensor& image_in, const at::Tensor& maps_in,
                             const std::optional<at::Tensor>& mask_in, const FftPasses& dev) {
  const at::Tensor image = (image_in.dim() == 3 ? image_in.unsqueeze(1) : image_in).contiguous();
  int64_t maps_sb = 0;
  const at::Tensor maps = sense_maps(maps_in, maps_sb);
  ModulateLayout L = sense_forward_layout(image, maps, maps_sb);
  const std::vector<int64_t> shape = {L.B, L.C, L.H, L.W};
  if (image.numel() == 0 || maps.numel() == 0) return at::empty(shape, image.options());
  const at::Tensor tables = dev.phase_tables(L.H, L.W, /*inverse=*/false, image);
  // Pre pass: the image is broadcast over the coils (in_sc = 0).
  L.in_sb = L.H * L.W;
  L.in_sc = 0;
  at::Tensor buf = fft_input_buffer(shape, image.options());
  dev.modulate(image, &maps, nullptr, tables, /*post=*/false, L, buf);
  at::Tensor out = fft2_ortho(buf, /*inverse=*/false);
  buf.reset();
  // Post pass, in place: phase and mask.
  ModulateLayout P = L;
  P.in_sb = L.C * L.H * L.W;
  P.in_sc = L.H * L.W;
  at::Tensor mask;
  if (mask_in.has_value()) {
    mask = sense_mask(*mask_in, shape, c10::toRealValueType(out.scalar_type()), P);
  }
  dev.modulate(out, nullptr, mask.defined() ? &mask : nullptr, tables, /*post=*/true, P, out);
  return out;
}

at::Tensor run_sense_adjoint(const at::Tensor& kspace_in, const at::Tensor& maps_in,
                             const std::optional<at::Tensor>& mask_in, const FftPasses& dev) {
  const at::Tensor kspace = kspace_in.contiguous();
  int64_t maps_sb = 0;
  const at::Tensor maps = sense_maps(maps_in, maps_sb);
  ModulateLayout L = sense_adjoint_layout(kspace);
  at::Tensor out = at::empty({L.B, 1, L.H, L.W}, kspace.options());
  if (out.numel() == 0) return out;
  if (L.C == 0) return out.zero_();
  const at::Tensor tables = dev.phase_tables(L.H, L.W, /*inverse=*/true, kspace);
  at::Tensor mask;
  if (mask_in.has_value()) {
    mask = sense_mask(*mask_in, kspace.sizes(), c10::toRealValueType(kspace.scalar_type()), L);
  }
  at::Tensor buf = fft_input_buffer(kspace.sizes(), kspace.options());
  dev.modulate(kspace, nullptr, mask.defined() ? &mask : nullptr, tables, /*post=*/false, L, buf);
  const at::Tensor z = fft2_ortho(buf, /*inverse=*/true);
  buf.reset();
  CoilLayout CL;
  CL.B = L.B;
  CL.C = L.C;
  CL.H = L.H;
  CL.W = L.W;
  CL.maps_sb = maps_sb;
  CL.even = L.even;
  dev.coil_combine(z, maps, tables, CL, out);
  return out;
}

}  // namespace detail

namespace {

at::Tensor sense_forward_cpu(const at::Tensor& image, const at::Tensor& maps,
                             const std::optional<at::Tensor>& mask) {
  detail::check_sense_forward_args(image, maps, mask);
  return detail::run_sense_forward(image, maps, mask, detail::kCpuFftPasses);
}

at::Tensor sense_adjoint_cpu(const at::Tensor& kspace, const at::Tensor& maps,
                             const std::optional<at::Tensor>& mask) {
  detail::check_sense_adjoint_args(kspace, maps, mask);
  return detail::run_sense_adjoint(kspace, maps, mask, detail::kCpuFftPasses);
}

at::Tensor rss_cpu(const at::Tensor& x_in) {
  detail::check_rss_args(x_in);
  const at::Tensor x = x_in.contiguous();
  const auto real = c10::toRealValueType(x.scalar_type());
  at::Tensor out = at::empty(detail::rss_shape(x), x.options().dtype(real));
  if (out.numel() == 0) return out;
  const CoilLayout L = detail::rss_layout(x);
  AT_DISPATCH_FLOATING_TYPES(real, "rss_cpu", [&] {
    const scalar_t* xp = static_cast<const scalar_t*>(x.const_data_ptr());
    if (x.is_complex()) {
      rss_cpu_loop<scalar_t, 2>(xp, out.mutable_data_ptr<scalar_t>(), L);
    } else {
      rss_cpu_loop<scalar_t, 1>(xp, out.mutable_data_ptr<scalar_t>(), L);
    }
  });
  return out;
}

}  // namespace

at::Tensor sense_forward(const at::Tensor& image, const at::Tensor& maps,
                         const std::optional<at::Tensor>& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::sense_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&)>();
  return op.call(image, maps, mask);
}

at::Tensor sense_adjoint(const at::Tensor& kspace, const at::Tensor& maps,
                         const std::optional<at::Tensor>& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::sense_adjoint", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&)>();
  return op.call(kspace, maps, mask);
}

at::Tensor rss(const at::Tensor& coil_images) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::rss", "")
                       .typed<at::Tensor(const at::Tensor&)>();
  return op.call(coil_images);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) {
  m.impl("sense_forward", &sense_forward_cpu);
  m.impl("sense_adjoint", &sense_adjoint_cpu);
  m.impl("rss", &rss_cpu);
}

}  // namespace kldm
