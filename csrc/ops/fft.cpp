// SPDX-License-Identifier: MIT
// kldm::fft2c / kldm::ifft2c: centred orthonormal 2-D FFTs with the centring folded into phase
// modulations (their argument checks, the shared helpers of fft.h and the CPU kernels; the
// SENSE and rss checks are in sense.cpp).
//
// fftshift(F(ifftshift(x))) = post * F(pre * x) with per-element phases (fft_math.h,
// docs/fft_centering.md). The pre-modulation is fused with the copy into the FFT buffer and the
// post-modulation is applied in place to the FFT's output, so the op costs one ATen FFT plus two
// memory passes instead of the two shift copies (torch.roll) of the shift-based definition.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/_fft_c2c.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/accumulate.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "fft.h"
#include "kldm/ops.h"

namespace kldm {
namespace detail {

void check_fft2c_args(const at::Tensor& x, const char* op) {
  TORCH_CHECK_TYPE(is_complex64_or_128(x), op,
                   ": x must be complex64 or complex128 [..., H, W], got ", x.scalar_type(),
                   " with shape ", x.sizes());
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 2 + kMaxFftLeadingDims, op,
                    ": x must be [..., H, W] with 2 to ", 2 + kMaxFftLeadingDims,
                    " dims, got shape ", x.sizes());
}

at::Tensor sense_mask(const at::Tensor& mask, at::IntArrayRef shape, at::ScalarType real,
                      ModulateLayout& L) {
  at::Tensor m = mask.scalar_type() == at::kBool ? mask : mask.to(real);
  if (m.dim() == 1) {
    m = m.view({1, 1, 1, -1});
  } else if (m.dim() == 2) {
    m = m.unsqueeze(0).unsqueeze(0);
  }
  // expand() gives stride 0 on broadcast dims, so a [W] column mask is read, not materialised.
  const at::Tensor mx = m.expand(shape);
  L.mask_sb = mx.stride(0);
  L.mask_sc = mx.stride(1);
  L.mask_sh = mx.stride(2);
  L.mask_sw = mx.stride(3);
  return m;
}

at::Tensor sense_maps(const at::Tensor& maps, int64_t& batch_stride) {
  at::Tensor m = maps.contiguous();
  batch_stride = m.size(0) == 1 ? 0 : m.size(1) * m.size(2) * m.size(3);
  return m;
}

at::Tensor phase_tables_cpu(int64_t H, int64_t W, bool inverse, const at::Tensor& like) {
  const auto real = c10::toRealValueType(like.scalar_type());
  at::Tensor tab = at::empty({4 * (H + W)}, at::TensorOptions().dtype(real));
  AT_DISPATCH_FLOATING_TYPES(real, "kldm_phase_tables", [&] {
    scalar_t* t = tab.mutable_data_ptr<scalar_t>();
    for (int64_t j = 0; j < 2 * (H + W); ++j) math::phase_table_entry(j, H, W, inverse, t);
  });
  return tab;
}

at::Tensor fft_input_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t bytes =
      c10::multiply_integers(sizes) *
      static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  if (!options.device().is_cpu() || bytes > kMaxCachedFftBufferBytes) {
    return at::empty(sizes, options);
  }
  // The bytes of the last buffer, kept by this thread. A buffer of the op is dropped before the op
  // returns; if anything still shares the storage (use_count > 1) a fresh one is allocated.
  thread_local c10::Storage cached;
  if (!cached || cached.use_count() > 1 || static_cast<int64_t>(cached.nbytes()) < bytes) {
    cached = at::empty({bytes}, options.dtype(at::kByte)).storage();
  }
  return at::empty({0}, options).set_(cached, 0, sizes, {});
}

at::Tensor fft2_ortho(const at::Tensor& buf, bool inverse) {
  const int64_t nd = buf.dim();
  // normalization 1 = fft_norm_mode::by_root_n ("ortho"), applied inside the FFT library.
  at::Tensor out = at::_fft_c2c(buf, {nd - 2, nd - 1}, /*normalization=*/1, /*forward=*/!inverse);
  // The result must own its memory: buf may be the thread's reused input buffer.
  if (!out.is_contiguous() || out.is_alias_of(buf)) out = out.clone(at::MemoryFormat::Contiguous);
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU loops
// ---------------------------------------------------------------------------------------------

namespace {

// Per-line factors phase(h, w) * mask(w), for one line (b, c, h). Even sizes: real signs, stored
// twice (interleaved like the data) so the common case is one vectorisable multiply per float.
template <typename T, typename M>
void line_factors(const T* tab_h, const T* tab_w, int64_t h, const M* mk, int64_t msw, int64_t W,
                  bool even, T* f) {
  if (even) {
    const T sh = tab_h[2 * h];
    for (int64_t w = 0; w < W; ++w) {
      const T m = mk != nullptr ? static_cast<T>(mk[w * msw]) : T(1);
      const T s = sh * tab_w[2 * w] * m;
      f[2 * w] = s;
      f[2 * w + 1] = s;
    }
  } else {
    for (int64_t w = 0; w < W; ++w) {
      const T m = mk != nullptr ? static_cast<T>(mk[w * msw]) : T(1);
      T p[2];
      math::phase_hw(tab_h, tab_w, h, w, p);
      f[2 * w] = p[0] * m;
      f[2 * w + 1] = p[1] * m;
    }
  }
}

template <typename T, typename M>
void modulate_cpu_loop(const T* in, const T* maps, const M* mask, const T* tab_h, const T* tab_w,
                       T* out, const ModulateLayout& L) {
  const int64_t W = L.W;
  const int64_t lines = L.B * L.C * L.H;
  // About 32k complex elements per task, so small problems stay on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(W, 1));
  at::parallel_for(0, lines, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> fac(2 * W);
    T* f = fac.data();
    for (int64_t line = begin; line < end; ++line) {
      const int64_t h = line % L.H;
      const int64_t bc = line / L.H;
      const int64_t c = bc % L.C;
      const int64_t b = bc / L.C;
      const T* x = in + 2 * (b * L.in_sb + c * L.in_sc + h * W);
      T* y = out + 2 * (line * W);
      const M* mk =
          mask != nullptr ? mask + b * L.mask_sb + c * L.mask_sc + h * L.mask_sh : nullptr;
      line_factors(tab_h, tab_w, h, mk, L.mask_sw, W, L.even, f);
      if (maps == nullptr) {
        if (L.even) {
          for (int64_t j = 0; j < 2 * W; ++j) y[j] = x[j] * f[j];
        } else {
          for (int64_t w = 0; w < W; ++w) math::cmul(x + 2 * w, f + 2 * w, y + 2 * w);
        }
      } else {
        const T* s = maps + 2 * (b * L.maps_sb + c * L.maps_sc + h * W);
        for (int64_t w = 0; w < W; ++w) {
          T v[2];
          math::cmul(s + 2 * w, x + 2 * w, v);
          if (L.even) {
            y[2 * w] = v[0] * f[2 * w];
            y[2 * w + 1] = v[1] * f[2 * w];
          } else {
            math::cmul(v, f + 2 * w, y + 2 * w);
          }
        }
      }
    }
  });
}

}  // namespace

void modulate_cpu(const at::Tensor& in, const at::Tensor* maps, const at::Tensor* mask,
                  const at::Tensor& tables, bool post, const ModulateLayout& L, at::Tensor& out) {
  if (L.B * L.C * L.H * L.W == 0) return;
  AT_DISPATCH_COMPLEX_TYPES(out.scalar_type(), "kldm_modulate_cpu", [&] {
    using T = typename scalar_t::value_type;
    const auto o = modulate_operands<T>(in, maps, tables, post, L, out);
    if (mask != nullptr && mask->scalar_type() == at::kBool) {
      modulate_cpu_loop<T, bool>(o.in, o.maps, mask->const_data_ptr<bool>(), o.tab_h, o.tab_w,
                                 o.out, L);
    } else {
      const T* m = mask != nullptr ? mask->const_data_ptr<T>() : nullptr;
      modulate_cpu_loop<T, T>(o.in, o.maps, m, o.tab_h, o.tab_w, o.out, L);
    }
  });
}

ModulateLayout fft2c_layout(const at::Tensor& x) {
  ModulateLayout L;
  L.H = x.size(-2);
  L.W = x.size(-1);
  L.B = L.H * L.W == 0 ? 0 : x.numel() / (L.H * L.W);
  L.C = 1;
  L.in_sb = L.H * L.W;
  L.even = L.H % 2 == 0 && L.W % 2 == 0;
  return L;
}

ModulateLayout sense_forward_layout(const at::Tensor& image, const at::Tensor& maps,
                                    int64_t maps_sb) {
  ModulateLayout L;
  L.B = image.size(0);
  L.C = maps.size(1);
  L.H = maps.size(2);
  L.W = maps.size(3);
  L.maps_sb = maps_sb;
  L.maps_sc = L.H * L.W;
  L.even = L.H % 2 == 0 && L.W % 2 == 0;
  return L;
}

ModulateLayout sense_adjoint_layout(const at::Tensor& kspace) {
  ModulateLayout L;
  L.B = kspace.size(0);
  L.C = kspace.size(1);
  L.H = kspace.size(2);
  L.W = kspace.size(3);
  L.in_sb = L.C * L.H * L.W;
  L.in_sc = L.H * L.W;
  L.even = L.H % 2 == 0 && L.W % 2 == 0;
  return L;
}

at::Tensor run_centred_fft(const at::Tensor& x_in, bool inverse, const FftPasses& dev) {
  const at::Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::empty_like(x, at::MemoryFormat::Contiguous);
  const ModulateLayout L = fft2c_layout(x);
  const at::Tensor tables = dev.phase_tables(L.H, L.W, inverse, x);
  at::Tensor buf = fft_input_buffer(x.sizes(), x.options());
  dev.modulate(x, nullptr, nullptr, tables, /*post=*/false, L, buf);
  at::Tensor out = fft2_ortho(buf, inverse);
  buf.reset();  // free the buffer before the post pass
  dev.modulate(out, nullptr, nullptr, tables, /*post=*/true, L, out);
  return out;
}

}  // namespace detail

namespace {

at::Tensor centred_fft_cpu(const at::Tensor& x, bool inverse) {
  detail::check_fft2c_args(x, inverse ? "ifft2c" : "fft2c");
  return detail::run_centred_fft(x, inverse, detail::kCpuFftPasses);
}

at::Tensor fft2c_cpu(const at::Tensor& x) { return centred_fft_cpu(x, /*inverse=*/false); }
at::Tensor ifft2c_cpu(const at::Tensor& x) { return centred_fft_cpu(x, /*inverse=*/true); }

}  // namespace

at::Tensor fft2c(const at::Tensor& x) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::fft2c", "")
                       .typed<at::Tensor(const at::Tensor&)>();
  return op.call(x);
}

at::Tensor ifft2c(const at::Tensor& x) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::ifft2c", "")
                       .typed<at::Tensor(const at::Tensor&)>();
  return op.call(x);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) {
  m.impl("fft2c", &fft2c_cpu);
  m.impl("ifft2c", &ifft2c_cpu);
}

}  // namespace kldm
