// SPDX-License-Identifier: MIT
// The cs-wavelet image that cgs starts from (kspace_ldm.sampling.cgs_refine.cs_start), step for
// step: min_x 0.5 ||A x - y||^2 + lam sum |W x|_detail by FISTA from the zero-filled image, W the
// orthonormal multi-level haar transform by strided slices, random cycle spinning with shifts
// drawn from a CPU generator seeded 0 (the stream of Python's torch.randint), the data scaled by
// the 99th percentile of the zero-filled magnitude. A = M F (single-coil) or M F S (SENSE maps).
// Written here rather than taken from a library: libtorch has no wavelet transform, and the
// haar of strided slices is exact and a few lines.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "kldm/ops.h"
#include "sampler_impl.h"

namespace kldm::detail {
namespace {

constexpr int64_t kMaxLevels = 4;  // cs-wavelet's default level (cgs_refine._LEVELS)

// cgs_refine._levels: levels such that the coarsest band is at least 2 samples.
int64_t haar_levels(int64_t h, int64_t w) {
  int64_t level = 1;
  while (level < kMaxLevels && std::min(h, w) / (int64_t{1} << (level + 1)) >= 2) ++level;
  return level;
}

int64_t padded(int64_t size, int64_t multiple) {
  return (size + multiple - 1) / multiple * multiple;
}

at::Tensor every2(const at::Tensor& x, int64_t r, int64_t c) {
  return x.slice(-2, r, std::nullopt, 2).slice(-1, c, std::nullopt, 2);
}

// Complex soft-thresholding, the prox of t |c| (cgs_refine._soft).
at::Tensor soft(const at::Tensor& c, double t) {
  auto mag = c.abs();
  return c * ((mag - t).clamp_min(0) / mag.clamp_min(std::numeric_limits<float>::min()));
}

// Exact prox of t sum |W x|_detail for complex [B, Hp, Wp] (cgs_refine.haar_prox).
at::Tensor haar_prox(const at::Tensor& x, double t, int64_t levels) {
  if (levels == 0) return x;
  auto a = every2(x, 0, 0), b = every2(x, 0, 1), c = every2(x, 1, 0), d = every2(x, 1, 1);
  auto ll = haar_prox((a + b + c + d) * 0.5, t, levels - 1);
  auto lh = soft((a - b + c - d) * 0.5, t);
  auto hl = soft((a + b - c - d) * 0.5, t);
  auto hh = soft((a - b - c + d) * 0.5, t);
  auto out = at::empty_like(x);
  every2(out, 0, 0).copy_((ll + lh + hl + hh) * 0.5);
  every2(out, 0, 1).copy_((ll - lh + hl - hh) * 0.5);
  every2(out, 1, 0).copy_((ll + lh - hl - hh) * 0.5);
  every2(out, 1, 1).copy_((ll - lh - hl + hh) * 0.5);
  return out;
}

}  // namespace

at::Tensor cs_start_image(const at::Tensor& y, const at::Tensor& m, double lam, int64_t iterations,
                          const at::Tensor& maps) {
  const bool sense = maps.defined();
  const int64_t H = y.size(-2), W = y.size(-1);
  const int64_t levels = haar_levels(H, W), span = int64_t{1} << levels;
  const int64_t Hp = padded(H, span), Wp = padded(W, span);
  auto mr = m.to(c10::toRealValueType(y.scalar_type()));  // [B|1, 1, H|1, W]
  auto mask1 = mr.expand({-1, 1, -1, -1});
  auto crop = [&](const at::Tensor& z) { return z.slice(-2, 0, H).slice(-1, 0, W); };
  auto pad = [&](const at::Tensor& x) { return at::constant_pad_nd(x, {0, Wp - W, 0, Hp - H}); };
  // cs._Forward on the padded grid: [B, Hp, Wp] -> [B, C, H, W] and back.
  auto forward = [&](const at::Tensor& z) {
    auto x = crop(z).unsqueeze(1);
    return sense ? kldm::sense_forward(x.contiguous(), maps, mask1) : kldm::fft2c(x) * mr;
  };
  auto adjoint = [&](const at::Tensor& k) {
    auto x = sense ? kldm::sense_adjoint(k.contiguous(), maps, mask1) : kldm::ifft2c(k * mr);
    return pad(x.select(1, 0));
  };
  auto zero_filled = sense ? kldm::sense_adjoint(y.contiguous(), maps, m).select(1, 0)
                           : kldm::ifft2c(y * mr).select(1, 0);  // [B, H, W]
  // cs._scale: per-slice 99th percentile of |zero-filled| (1 for an all-zero slice).
  auto q = at::quantile(zero_filled.abs().flatten(1).to(at::kFloat), 0.99, 1);
  auto s = at::where(q > 0, q, at::ones_like(q)).to(c10::toRealValueType(y.scalar_type()));
  s = s.reshape({-1, 1, 1});  // [B, 1, 1]
  auto ys = y * mr / s.unsqueeze(1);
  auto x = adjoint(ys);
  auto v = x;
  double t = 1.0;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  for (int64_t i = 0; i < iterations; ++i) {
    auto g = v - adjoint(forward(v) - ys);  // unit step: ||A|| <= 1
    auto shifts = at::randint(0, span, {2}, gen, at::TensorOptions().dtype(at::kLong));
    const int64_t sh = shifts[0].item<int64_t>(), sw = shifts[1].item<int64_t>();
    g = at::roll(g, {sh, sw}, {-2, -1});
    auto x_new = at::roll(haar_prox(g, lam, levels), {-sh, -sw}, {-2, -1});
    const double t_new = (1.0 + std::sqrt(1.0 + 4.0 * t * t)) / 2.0;
    v = x_new + ((t - 1.0) / t_new) * (x_new - x);
    x = std::move(x_new);
    t = t_new;
  }
  return (crop(x) * s).unsqueeze(1).contiguous();  // [B, 1, H, W]
}

}  // namespace kldm::detail
