// SPDX-License-Identifier: MIT
// kldm::dc_residual: masked guidance residual r = mask * (pred - measured) and its squared norm per
// sample, in one pass (argument checks and CPU kernel).
#include "dc_residual.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "dc_project.h"
#include "dcnorm_simd.h"
#include "kldm/ops.h"

namespace kldm {
namespace detail {

void check_dc_residual_args(const at::Tensor& pred, const at::Tensor& measured,
                            const at::Tensor& mask) {
  check_masked_kspace_args("dc_residual", pred, measured, mask);
}

DcResidualIO prepare_dc_residual(const at::Tensor& pred, const at::Tensor& measured,
                                 const at::Tensor& mask) {
  DcResidualIO io;
  static_cast<MaskedKspaceIO&>(io) = prepare_masked_kspace(pred, measured, mask);
  io.L.base = dc_project_layout(io.pred, io.mask);
  io.L.samples = pred.dim() >= 3 ? pred.size(0) : 1;
  io.L.rows_per_sample = io.L.samples > 0 ? io.L.base.rows / io.L.samples : 0;
  std::vector<int64_t> norm_shape;  // [B] for rank >= 3, [] for a 2-D input
  if (pred.dim() >= 3) norm_shape.push_back(pred.size(0));
  io.sq_norm =
      at::empty(norm_shape, pred.options().dtype(c10::toRealValueType(pred.scalar_type())));
  if (pred.numel() == 0) io.sq_norm.zero_();  // an empty sum
  return io;
}

}  // namespace detail

namespace {

// Work is cut into chunks of whole lines (a line is W complex samples) of about kChunkElems
// samples, never straddling two samples. Each chunk sums |r|^2 into its own slot and the slots of a
// sample are added in chunk order, so the norm depends on the shape only: the same bits for any
// thread count or scheduling.
constexpr int64_t kChunkElems = 16384;

// One line of W complex samples: r = m * (p - q), and the squares of r's (re, im) added to four
// independent pair accumulators (sample w goes to accumulator w % 4: eight add chains that keep the
// FP units busy). The caller combines them in a fixed order, so the sum does not depend on SIMD or
// threads. kUnitStride: the mask line is contiguous ([W], [H, W] and full masks), the fast path
// whose mask loads vectorise; otherwise the mask is read through its stride (0 for an [H, 1] mask).
template <bool kUnitStride, typename T, typename M>
void dc_residual_line(const T* __restrict__ p, const T* __restrict__ q, const M* __restrict__ m,
                      int64_t mask_stride, T* __restrict__ r, int64_t W, cpu::Pair (&acc)[4]) {
  const int64_t mask_stride_w = kUnitStride ? 1 : mask_stride;
  int64_t w = 0;
  for (; w + 3 < W; w += 4) {
    for (int j = 0; j < 4; ++j) {
      const int64_t e = 2 * (w + j);
      const T mw = static_cast<T>(m[(w + j) * mask_stride_w]);
      r[e] = math::dc_residual_part(p[e], q[e], mw);
      r[e + 1] = math::dc_residual_part(p[e + 1], q[e + 1], mw);
      const cpu::Pair v = cpu::load_pair(r + e);  // squares of the stored r: exact in double
      acc[j] += v * v;
    }
  }
  for (; w < W; ++w) {
    const T mw = static_cast<T>(m[w * mask_stride_w]);
    r[2 * w] = math::dc_residual_part(p[2 * w], q[2 * w], mw);
    r[2 * w + 1] = math::dc_residual_part(p[2 * w + 1], q[2 * w + 1], mw);
    const cpu::Pair v = cpu::load_pair(r + 2 * w);
    acc[0] += v * v;
  }
}

template <typename T, typename M>
void dc_residual_cpu_loop(const T* pred, const T* meas, const M* mask, T* out, T* sq_norm,
                          const DcResidualLayout& L) {
  const DcProjectLayout& B = L.base;
  const int64_t lines_per_sample = L.rows_per_sample * B.H;
  const int64_t chunk_lines = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(B.W, 1));
  const int64_t chunks_per_sample = (lines_per_sample + chunk_lines - 1) / chunk_lines;
  const int64_t num_chunks = L.samples * chunks_per_sample;
  std::vector<double> partial(static_cast<size_t>(num_chunks), 0.0);
  // Grain: about 32k complex samples per task, so small problems run on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / (chunk_lines * B.W));
  at::parallel_for(0, num_chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t s = c / chunks_per_sample;
      const int64_t l0 = (c - s * chunks_per_sample) * chunk_lines;
      const int64_t l1 = std::min(l0 + chunk_lines, lines_per_sample);
      cpu::Pair acc[4] = {cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair()};
      for (int64_t l = s * lines_per_sample + l0; l < s * lines_per_sample + l1; ++l) {
        const int64_t row = l / B.H;
        const int64_t h = l - row * B.H;
        const M* mh = mask + B.mask_row_offset(row) + h * B.mask_stride_h;
        const int64_t o = 2 * l * B.W;
        if (B.mask_stride_w == 1) {
          dc_residual_line<true>(pred + o, meas + o, mh, 1, out + o, B.W, acc);
        } else {
          dc_residual_line<false>(pred + o, meas + o, mh, B.mask_stride_w, out + o, B.W, acc);
        }
      }
      const cpu::Pair both = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      const double sum = both[0] + both[1];
      partial[static_cast<size_t>(c)] = sum;
    }
  });
  for (int64_t s = 0; s < L.samples; ++s) {
    double total = 0.0;
    for (int64_t k = 0; k < chunks_per_sample; ++k) {
      total += partial[static_cast<size_t>(s * chunks_per_sample + k)];
    }
    sq_norm[s] = static_cast<T>(total);
  }
}

std::tuple<at::Tensor, at::Tensor> dc_residual_cpu(const at::Tensor& pred_in,
                                                   const at::Tensor& measured_in,
                                                   const at::Tensor& mask_in) {
  detail::check_dc_residual_args(pred_in, measured_in, mask_in);
  const auto io = detail::prepare_dc_residual(pred_in, measured_in, mask_in);
  if (io.pred.numel() == 0) return {io.out, io.sq_norm};
  AT_DISPATCH_COMPLEX_TYPES(io.pred.scalar_type(), "dc_residual_cpu", [&] {
    using T = typename scalar_t::value_type;
    const T* p = reinterpret_cast<const T*>(io.pred.const_data_ptr<scalar_t>());
    const T* q = reinterpret_cast<const T*>(io.measured.const_data_ptr<scalar_t>());
    T* r = reinterpret_cast<T*>(io.out.mutable_data_ptr<scalar_t>());
    T* n = io.sq_norm.mutable_data_ptr<T>();
    if (io.mask.scalar_type() == at::kBool) {
      dc_residual_cpu_loop<T, bool>(p, q, io.mask.const_data_ptr<bool>(), r, n, io.L);
    } else {
      dc_residual_cpu_loop<T, T>(p, q, io.mask.const_data_ptr<T>(), r, n, io.L);
    }
  });
  return {io.out, io.sq_norm};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> dc_residual(const at::Tensor& pred, const at::Tensor& measured,
                                               const at::Tensor& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::dc_residual", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(pred, measured, mask);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) { m.impl("dc_residual", &dc_residual_cpu); }

}  // namespace kldm
