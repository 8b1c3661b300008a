// SPDX-License-Identifier: MIT
// kldm::Sampler: the cgs algorithm (kspace_ldm.sampling.cgs, KspaceLDMSampler.cgs), step for
// step; the shared steps are in sampler.cpp.
#include <optional>
#include <tuple>

#include "kldm/ops.h"

#include "sampler_impl.h"

namespace kldm {

// KspaceLDMSampler._ddim_update: z_prev = sqrt(a_p) x0 + sqrt(1 - a_p - sigma^2) eps [+ sigma
// noise] on kldm::ddim_step, which derives x0 from (model_output, sample): it gets the latent at
// level t whose Tweedie estimate is the consistent x0, sqrt(a_t) x0 + sqrt(1 - a_t) eps.
at::Tensor Sampler::Impl::ddim_update(const at::Tensor& x0, const at::Tensor& eps,
                                      const at::Tensor& a_t, const at::Tensor& a_p, double eta,
                                      at::Generator& gen) const {
  auto sigma = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).clamp_min(0).sqrt();
  auto sa = a_t.sqrt(), sb = (1 - a_t).sqrt();
  std::optional<at::Tensor> noise;
  if (eta > 0) noise = randn(x0.sizes(), gen);
  return std::get<0>(kldm::ddim_step(eps, sa * x0 + sb * eps, noise, sa.item<double>(),
                                     sb.item<double>(), a_p.sqrt().item<double>(),
                                     (1 - a_p - sigma.square()).clamp_min(0).sqrt().item<double>(),
                                     sigma.item<double>()));
}

at::Tensor Sampler::Impl::cgs(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                              at::Generator& gen, const CgsHooks* hooks) const {
  const int64_t steps = o.steps.value_or(cgs_steps);
  const int64_t t0 = o.t0.value_or(cgs_t0);
  const double guidance = o.guidance.value_or(cgs_guidance);
  const int64_t n_train = info.num_train_timesteps;
  if (t0 < 0 || t0 >= n_train || steps < 1)
    throw Error("sampler: need 0 <= t0 < " + std::to_string(n_train) + " and steps >= 1");
  const auto& ac = alphas_cumprod;
  const double s = scale_factor;
  NormStats anchor = norm.estimate(y, m);
  NormStats stats = anchor;
  const bool start = hooks != nullptr && hooks->start.defined();
  auto z = encode(norm.normalize_with(start ? hooks->start : y, stats), nullptr);
  auto x0 = s * z;
  at::Tensor k, bias;
  std::tie(k, stats) = decoded(x0, y, m, stats, o.refit, anchor);
  if (hooks != nullptr && hooks->residual > 0) {  // the first stage's error on the start
    bias = hooks->residual * ((start ? hooks->start : y) - k);
    k = k + bias;
  }
  x0 = consistent_latent(k, y, m, stats, hooks);
  // torch.linspace(t0, 0, steps + 1).round().long().unique_consecutive()
  auto lin = at::linspace(static_cast<double>(t0), 0.0, steps + 1).round().to(at::kLong);
  std::vector<int64_t> ts;
  for (int64_t i = 0; i < lin.numel(); ++i) {
    int64_t v = lin[i].item<int64_t>();
    if (ts.empty() || ts.back() != v) ts.push_back(v);
  }
  auto noise = randn(x0.sizes(), gen);
  auto zt = ac[ts[0]].sqrt() * x0 + (1 - ac[ts[0]]).sqrt() * noise;
  for (size_t i = 0; i < ts.size(); ++i) {
    const int64_t t = ts[i];
    at::Tensor eps;
    std::tie(eps, x0) = eps_x0(zt, t);
    if (guidance > 0) {
      auto grad = residual_grad(x0 / s, y, m, stats, /*scale_free=*/true) / s;
      x0 = x0 - guidance * grad;
    }
    if (i + 1 == ts.size()) break;  // the last estimate goes to the final consistency
    x0 = consistency(x0, y, m, stats, false, anchor, hooks, bias).first;
    zt = ddim_update(x0, eps, ac[t], ac[ts[i + 1]], o.eta, gen);
  }
  k = decoded(x0, y, m, stats, false, anchor).first;
  if (bias.defined()) k = k + bias;
  if (hooks != nullptr && hooks->final) return hooks->final(k);
  return kldm::dc_project(k, y, m, 1.0);
}

}  // namespace kldm
