// SPDX-License-Identifier: MIT
#include "normalizer.h"

#include <cmath>
#include <optional>
#include <tuple>

#include "kldm/ops.h"
#include "kldm/sampler.h"

namespace kldm::detail {

at::Tensor complex_to_channels(const at::Tensor& k) {
  // view_as_real: [B, C, H, W, 2] -> [B, C, 2, H, W] -> [B, 2C, H, W]
  return at::view_as_real(k).movedim(-1, -3).flatten(-4, -3).contiguous();
}

at::Tensor channels_to_complex(const at::Tensor& x) {
  auto s = x.sizes();
  auto parts = x.reshape({s[0], s[1] / 2, 2, s[2], s[3]}).movedim(-3, -1).contiguous();
  return at::view_as_complex(parts);
}

int64_t Normalizer::acs_start(int64_t width, int64_t* count) const {
  // round() as Python's (banker's rounding on .5) -- std::nearbyint with the default mode.
  int64_t n = static_cast<int64_t>(std::nearbyint(acs_fraction * static_cast<double>(width)));
  n = std::min(width, std::max<int64_t>(2, n));
  *count = n;
  return width / 2 - n / 2;
}

at::Tensor Normalizer::weight(int64_t h, int64_t w, const at::TensorOptions& opt) const {
  if (weighting != "radial") return at::ones({h, w}, opt);
  auto f64 = opt.dtype(at::kDouble);
  auto ky = (at::arange(h, f64) - static_cast<double>(h / 2)) / static_cast<double>(h);
  auto kx = (at::arange(w, f64) - static_cast<double>(w / 2)) / static_cast<double>(w);
  auto r2 = ky.unsqueeze(1).square() + kx.unsqueeze(0).square();
  double r02 = weight_r0 * weight_r0;
  return ((r2 + r02) / r02).pow(weight_power / 2).to(opt.dtype());
}

static at::Tensor apply_weighting(const Normalizer& n, at::Tensor x) {
  if (n.weighting == "radial") {
    x = x * n.weight(x.size(-2), x.size(-1), x.options());
  } else if (n.weighting == "log") {
    x = at::sign(x) * at::log1p(x.abs() / n.log_c);
  }
  return x;
}

// (channel - shift) / scale with given statistics (undefined: 0 / 1) in one pass of
// kldm::kspace_normalize (kspace_norm.channels_with); eps 0: only a zero scale, which the clamps
// never leave, would be replaced by 1.
static at::Tensor channels_with(const at::Tensor& k, const NormStats& stats) {
  if (!stats.shift.defined() && !stats.scale.defined()) return complex_to_channels(k);
  const auto real = k.options().dtype(c10::toRealValueType(k.scalar_type()));
  auto one = at::ones({}, real);
  auto scale = stats.scale.defined() ? stats.scale.to(real.dtype()) : one;
  auto shift = stats.shift.defined() ? stats.shift.to(real.dtype()) : at::zeros({}, real);
  return std::get<0>(kldm::kspace_normalize(k, shift, scale, 0.0));
}

std::pair<at::Tensor, NormStats> Normalizer::normalize(const at::Tensor& k) const {
  at::Tensor x;
  NormStats stats;
  if (mode == "standardize") {
    // kldm::kspace_normalize computes the statistics (std <= eps: divisor 1) and the channels.
    std::tie(x, stats.shift, stats.scale) =
        kldm::kspace_normalize(k, std::nullopt, std::nullopt, eps);
  } else if (mode == "rms" || mode == "acs") {
    at::Tensor src = k;
    if (mode == "acs") {
      int64_t n = 0;
      int64_t start = acs_start(k.size(-1), &n);
      src = k.narrow(-1, start, n);
    }
    stats.scale = src.abs().square().mean({1, 2, 3}, true).sqrt().clamp_min(eps);
    x = channels_with(k, stats);
  } else {
    x = complex_to_channels(k);
  }
  return {apply_weighting(*this, x), stats};
}

at::Tensor Normalizer::normalize_with(const at::Tensor& k, const NormStats& stats) const {
  return apply_weighting(*this, channels_with(k, stats));
}

at::Tensor Normalizer::denormalize(const at::Tensor& x_in, const NormStats& stats) const {
  auto x = x_in;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) x = x.to(at::kFloat);
  if (weighting == "radial") {
    x = x / weight(x.size(-2), x.size(-1), x.options());
  } else if (weighting == "log") {
    x = at::sign(x) * log_c * at::expm1(x.abs().clamp_max(log_clamp));
  }
  if (!stats.scale.defined() && !stats.shift.defined()) return channels_to_complex(x);
  // kldm::kspace_denormalize: x * scale + shift and the interleave to complex in one pass.
  auto one = at::ones({}, x.options());
  auto scale = stats.scale.defined() ? stats.scale.to(x.scalar_type()) : one;
  auto shift = stats.shift.defined() ? stats.shift.to(x.scalar_type()) : at::zeros({}, x.options());
  return kldm::kspace_denormalize(x, shift, scale);
}

at::Tensor Normalizer::denormalize_vjp(const at::Tensor& x_in, const NormStats& stats,
                                       const at::Tensor& g_channels) const {
  auto x = x_in.to(at::kFloat);
  auto g = g_channels;
  if (stats.scale.defined()) g = g * stats.scale;
  if (weighting == "radial") {
    g = g / weight(x.size(-2), x.size(-1), x.options());
  } else if (weighting == "log") {
    // d/dx sign(x) c expm1(min(|x|, clamp)) = c exp(|x|) where |x| < clamp (autograd: sign(x)^2
    // from abs, so 0 at x == 0; clamp_max passes the gradient where |x| <= clamp).
    auto a = x.abs();
    g = g * (log_c * at::exp(a) * at::sign(x).square() * (a <= log_clamp).to(x.scalar_type()));
  }
  return g;
}

at::Tensor Normalizer::acs_rms(const at::Tensor& k, const at::Tensor& mask) const {
  int64_t n = 0;
  int64_t start = acs_start(k.size(-1), &n);
  auto power = k.narrow(-1, start, n).abs().square();  // [B, C, H, n]
  auto m = mask.narrow(-1, start, n).to(power.scalar_type());
  m = m.expand({power.size(0), 1, power.size(2), power.size(3)});
  auto count = m.sum({1, 2, 3});
  if ((count == 0).any().item<bool>())
    throw Error("mask: no calibration sample is measured; cannot normalise the scan");
  return ((power * m).sum({1, 2, 3}) / (count * power.size(1))).sqrt();
}

NormStats Normalizer::estimate(const at::Tensor& masked, const at::Tensor& mask) const {
  NormStats out;
  if (mode == "none") return out;
  auto a = acs_rms(masked, mask).to(at::kFloat).reshape({-1, 1, 1, 1});
  if (mode == "acs") {
    out.scale = a.clamp_min(eps);
    return out;
  }
  if (ratio_scale.empty()) throw Error("manifest: norm_ratio.scale is missing");
  if (mode == "standardize" && static_cast<int64_t>(ratio_scale.size()) != 2 * masked.size(1))
    throw Error("norm_ratio: " + std::to_string(ratio_scale.size()) + " channel ratios for " +
                std::to_string(masked.size(1)) + " coil(s)");
  auto f32 = a.options();
  auto sr = at::tensor(std::vector<float>(ratio_scale.begin(), ratio_scale.end()), f32);
  out.scale = (a * sr.reshape({1, -1, 1, 1})).clamp_min(eps);
  if (!ratio_shift.empty()) {
    auto hr = at::tensor(std::vector<float>(ratio_shift.begin(), ratio_shift.end()), f32);
    out.shift = a * hr.reshape({1, -1, 1, 1});
  }
  return out;
}

NormStats refit_stats(const Normalizer& norm, const at::Tensor& x, const at::Tensor& y,
                      const at::Tensor& mask, const NormStats& prior) {
  if (!prior.scale.defined()) return prior;
  auto u = complex_to_channels(norm.denormalize(x, NormStats{}));  // [B, 2C, H, W]
  auto yr = complex_to_channels(y);
  auto m = mask.to(u.scalar_type()).expand({u.size(0), 1, u.size(2), u.size(3)});
  NormStats out;
  at::Tensor scale, mu_u, mu_y;
  if (prior.scale.size(1) == 1) {
    auto num = (m * u * yr).sum({1, 2, 3}, true);
    auto den = (m * u * u).sum({1, 2, 3}, true).clamp_min(1e-30);
    scale = num / den;
  } else {
    auto n = m.sum({2, 3}, true).clamp_min(1);
    mu_u = (m * u).sum({2, 3}, true) / n;
    mu_y = (m * yr).sum({2, 3}, true) / n;
    auto cov = (m * (u - mu_u) * (yr - mu_y)).sum({2, 3}, true);
    auto var = (m * (u - mu_u).square()).sum({2, 3}, true).clamp_min(1e-30);
    scale = cov / var;
  }
  scale = at::minimum(at::maximum(scale, prior.scale * 0.25), prior.scale * 4.0);
  out.scale = scale;
  if (prior.shift.defined() && prior.scale.size(1) != 1) out.shift = mu_y - scale * mu_u;
  return out;
}

}  // namespace kldm::detail
