// SPDX-License-Identifier: MIT
// The k-space <-> network-domain maps of kspace_ldm.models.kspace_norm.KspaceNormalizer and the
// test-time statistics of kspace_ldm.latents / sampling.cgs, op for op, so the C++ sampler matches
// the Python one. Complex k-space is [B, C, H, W]; the network domain is real [B, 2C, H, W] with
// interleaved channels [re0, im0, re1, im1, ...].
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace kldm::detail {

// Undefined tensors stand for Python's None.
struct NormStats {
  at::Tensor shift;  // [B, K, 1, 1] or undefined
  at::Tensor scale;  // [B, K, 1, 1] or undefined
};

at::Tensor complex_to_channels(const at::Tensor& k);  // [B, C, H, W] complex -> [B, 2C, H, W]
at::Tensor channels_to_complex(const at::Tensor& x);  // inverse

struct Normalizer {
  std::string mode = "rms";  // rms | standardize | acs | none
  double acs_fraction = 0.04;
  std::string weighting = "none";  // none | radial | log
  double weight_power = 1.0, weight_r0 = 0.02, log_c = 1e-3, log_clamp = 20.0, eps = 1e-12;
  std::vector<double> ratio_scale, ratio_shift;  // training-set ratios (empty: none)

  int64_t acs_start(int64_t width, int64_t* count) const;
  at::Tensor weight(int64_t h, int64_t w, const at::TensorOptions& opt) const;
  // KspaceNormalizer.normalize: statistics of `k` itself (the reference sampler).
  std::pair<at::Tensor, NormStats> normalize(const at::Tensor& k) const;
  // latents.normalize_with: given statistics.
  at::Tensor normalize_with(const at::Tensor& k, const NormStats& stats) const;
  at::Tensor denormalize(const at::Tensor& x, const NormStats& stats) const;
  // d loss / d x for a loss whose gradient w.r.t. the de-normalised channels is `g_channels`
  // (the chain rule through denormalize: scale and the inverse weighting).
  at::Tensor denormalize_vjp(const at::Tensor& x, const NormStats& stats,
                             const at::Tensor& g_channels) const;
  // latents.acs_rms / estimate_norm_stats: full-k-space statistics from the calibration RMS.
  at::Tensor acs_rms(const at::Tensor& k, const at::Tensor& mask) const;
  NormStats estimate(const at::Tensor& masked, const at::Tensor& mask) const;
};

// KspaceLDMSampler.refit_stats: least-squares statistics of decoded `x` on the measured samples.
NormStats refit_stats(const Normalizer& norm, const at::Tensor& x, const at::Tensor& y,
                      const at::Tensor& mask, const NormStats& prior);

}  // namespace kldm::detail
