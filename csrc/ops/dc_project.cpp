// SPDX-License-Identifier: MIT
// kldm::dc_project: masked data consistency on complex k-space (argument checks and CPU kernel).
#include "dc_project.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dc_project_math.h"
#include "kldm/ops.h"

namespace kldm {
namespace detail {

void check_masked_kspace_args(const char* op, const at::Tensor& pred, const at::Tensor& measured,
                              const at::Tensor& mask) {
  TORCH_CHECK_TYPE(pred.is_complex(), op, ": pred must be complex64 or complex128, got ",
                   pred.scalar_type());
  TORCH_CHECK_TYPE(measured.scalar_type() == pred.scalar_type(), op,
                   ": measured must have pred's dtype ", pred.scalar_type(), ", got ",
                   measured.scalar_type());
  TORCH_CHECK_VALUE(pred.dim() >= 2 && pred.dim() <= 2 + kMaxLeadingDims, op,
                    ": pred must be [..., H, W] with 2 to ", 2 + kMaxLeadingDims,
                    " dims, got shape ", pred.sizes());
  TORCH_CHECK_VALUE(measured.sizes() == pred.sizes(), op, ": measured shape ", measured.sizes(),
                    " does not match pred shape ", pred.sizes());
  TORCH_CHECK_TYPE(!mask.is_complex(), op, ": mask must be bool or real, got ", mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() >= 1 && mask.dim() <= pred.dim(), op, ": mask must have 1 to ",
                    pred.dim(), " dims, got shape ", mask.sizes());
  const auto ps = pred.sizes();
  const auto ms = mask.sizes();
  for (int64_t i = 1; i <= mask.dim(); ++i) {
    const int64_t m = ms[mask.dim() - i];
    const int64_t p = ps[pred.dim() - i];
    TORCH_CHECK_VALUE(m == p || m == 1, op, ": mask shape ", ms,
                      " does not broadcast to k-space shape ", ps, " (dim -", i, ": ", m, " vs ", p,
                      ")");
  }
  TORCH_CHECK_VALUE(measured.device() == pred.device(), op, ": measured is on ", measured.device(),
                    " but pred is on ", pred.device());
  TORCH_CHECK_VALUE(mask.device() == pred.device(), op, ": mask is on ", mask.device(),
                    " but pred is on ", pred.device());
}

void check_dc_project_args(const at::Tensor& pred, const at::Tensor& measured,
                           const at::Tensor& mask, double weight) {
  check_masked_kspace_args("dc_project", pred, measured, mask);
  TORCH_CHECK_VALUE(std::isfinite(weight) && weight >= 0.0 && weight <= 1.0,
                    "dc_project: weight must be in [0, 1], got ", weight);
}

at::Tensor dc_project_mask(const at::Tensor& pred, const at::Tensor& mask) {
  if (mask.scalar_type() == at::kBool) return mask;
  return mask.to(c10::toRealValueType(pred.scalar_type()));
}

DcProjectLayout dc_project_layout(const at::Tensor& pred, const at::Tensor& mask) {
  DcProjectLayout L;
  const int64_t nd = pred.dim();
  L.H = pred.size(nd - 2);
  L.W = pred.size(nd - 1);
  L.num_lead = static_cast<int>(nd - 2);
  L.rows = 1;
  // Broadcast strides: expand() gives stride 0 on broadcast dims, without copying.
  const at::Tensor mx = mask.expand(pred.sizes());
  for (int d = 0; d < L.num_lead; ++d) {
    L.lead_size[d] = pred.size(d);
    L.lead_stride[d] = mx.stride(d);
    L.rows *= pred.size(d);
  }
  L.mask_stride_h = mx.stride(nd - 2);
  L.mask_stride_w = mx.stride(nd - 1);
  return L;
}

MaskedKspaceIO prepare_masked_kspace(const at::Tensor& pred, const at::Tensor& measured,
                                     const at::Tensor& mask) {
  MaskedKspaceIO io;
  io.pred = pred.contiguous();
  io.measured = measured.contiguous();
  io.mask = dc_project_mask(io.pred, mask);
  io.out = at::empty_like(io.pred, at::MemoryFormat::Contiguous);
  return io;
}

}  // namespace detail

namespace {

// Hard replacement (weight 1, bool mask): a branch-free select between two complex samples moved
// as 64-bit words (one word for complex64, two for complex128). Random sampling masks make a
// branch per sample unpredictable; the bit-mask select vectorises and copies bits exactly.
template <typename T>
void dc_replace_cpu_loop(const T* pred, const T* meas, const bool* mask, T* out,
                         const DcProjectLayout& L) {
  constexpr int64_t kWords = static_cast<int64_t>(2 * sizeof(T) / sizeof(uint64_t));
  const int64_t plane = L.H * L.W;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(plane, 1));
  at::parallel_for(0, L.rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const bool* mrow = mask + L.mask_row_offset(r);
      for (int64_t h = 0; h < L.H; ++h) {
        const bool* mh = mrow + h * L.mask_stride_h;
        const int64_t o = (r * plane + h * L.W) * kWords;
        const uint64_t* p = reinterpret_cast<const uint64_t*>(pred) + o;
        const uint64_t* q = reinterpret_cast<const uint64_t*>(meas) + o;
        uint64_t* y = reinterpret_cast<uint64_t*>(out) + o;
        const int64_t sw = L.mask_stride_w;
        for (int64_t w = 0; w < L.W; ++w) {
          const uint64_t sel = uint64_t{0} - static_cast<uint64_t>(mh[w * sw]);  // all ones or 0
          for (int64_t k = 0; k < kWords; ++k) {
            y[w * kWords + k] = (q[w * kWords + k] & sel) | (p[w * kWords + k] & ~sel);
          }
        }
      }
    }
  });
}

template <typename T, typename M>
void dc_project_cpu_loop(const T* pred, const T* meas, const M* mask, T weight, T* out,
                         const DcProjectLayout& L) {
  const int64_t plane = L.H * L.W;
  // Grain: about 32k complex elements per task, so small problems run on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(plane, 1));
  at::parallel_for(0, L.rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const M* mrow = mask + L.mask_row_offset(r);
      const int64_t base = r * plane;
      for (int64_t h = 0; h < L.H; ++h) {
        const M* mh = mrow + h * L.mask_stride_h;
        const int64_t o = 2 * (base + h * L.W);
        const T* p = pred + o;
        const T* q = meas + o;
        T* y = out + o;
        for (int64_t w = 0; w < L.W; ++w) {
          const T a = weight * static_cast<T>(mh[w * L.mask_stride_w]);
          math::dc_blend(p + 2 * w, q + 2 * w, a, y + 2 * w);
        }
      }
    }
  });
}

at::Tensor dc_project_cpu(const at::Tensor& pred_in, const at::Tensor& measured_in,
                          const at::Tensor& mask_in, double weight) {
  detail::check_dc_project_args(pred_in, measured_in, mask_in, weight);
  const auto io = detail::prepare_masked_kspace(pred_in, measured_in, mask_in);
  const DcProjectLayout L = detail::dc_project_layout(io.pred, io.mask);
  if (io.pred.numel() == 0) return io.out;
  AT_DISPATCH_COMPLEX_TYPES(io.pred.scalar_type(), "dc_project_cpu", [&] {
    using T = typename scalar_t::value_type;
    const T* p = reinterpret_cast<const T*>(io.pred.const_data_ptr<scalar_t>());
    const T* q = reinterpret_cast<const T*>(io.measured.const_data_ptr<scalar_t>());
    T* y = reinterpret_cast<T*>(io.out.mutable_data_ptr<scalar_t>());
    const at::Tensor& mask = io.mask;
    if (mask.scalar_type() == at::kBool && weight == 1.0) {
      dc_replace_cpu_loop<T>(p, q, mask.const_data_ptr<bool>(), y, L);
    } else if (mask.scalar_type() == at::kBool) {
      dc_project_cpu_loop<T, bool>(p, q, mask.const_data_ptr<bool>(), static_cast<T>(weight), y, L);
    } else {
      dc_project_cpu_loop<T, T>(p, q, mask.const_data_ptr<T>(), static_cast<T>(weight), y, L);
    }
  });
  return io.out;
}

}  // namespace

at::Tensor dc_project(const at::Tensor& pred, const at::Tensor& measured, const at::Tensor& mask,
                      double weight) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kldm::dc_project", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(pred, measured, mask, weight);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) { m.impl("dc_project", &dc_project_cpu); }

}  // namespace kldm
