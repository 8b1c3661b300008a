// SPDX-License-Identifier: MIT
// kldm::Sampler: the cgs-ref algorithm (kspace_ldm.sampling.cgs, KspaceLDMSampler.cgs_ref), step
// for step; the shared steps are in sampler.cpp.
#include <optional>
#include <tuple>

#include "kldm/ops.h"

#include "sampler_impl.h"

namespace kldm {

at::Tensor Sampler::Impl::cgs_ref(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                                  at::Generator& gen) const {
  const int64_t t0 = o.t0.value_or(ref_t0);
  const double lam = o.guidance.value_or(ref_guidance);
  if (t0 < 0 || t0 >= info.num_train_timesteps)
    throw Error("sampler: need 0 <= t0 < " + std::to_string(info.num_train_timesteps));
  const auto& ac = alphas_cumprod;
  auto [x, stats] = norm.normalize(y);  // statistics of the undersampled k-space (ref bug)
  auto z = encode(x, &gen);
  auto s = 1.0 / z.flatten(1).std(1).reshape({-1, 1, 1, 1});
  z = s * z;
  auto noise = randn(z.sizes(), gen);
  z = ac[t0].sqrt() * z + (1 - ac[t0]).sqrt() * noise;
  for (int64_t t = t0; t >= 0; --t) {
    auto eps = model_output(z, t);
    std::optional<at::Tensor> step_noise;
    if (t > 0) step_noise = randn(eps.sizes(), gen);  // diffusers draws it only for t > 0
    z = std::get<0>(kldm::ddpm_step(eps, z, step_noise, ddpm.sqrt_alpha_prod_t[t],
                                    ddpm.sqrt_beta_prod_t[t], ddpm.pred_original_sample_coeff[t],
                                    ddpm.current_sample_coeff[t], ddpm.noise_std[t],
                                    prediction_type, clip_sample, clip_sample_range));
    if (t > 80) {
      if (t % 20) continue;
      auto k = norm.denormalize(decode(z / s), stats).to(y.scalar_type());
      k = at::where(m, y, k);
      std::tie(x, stats) = norm.normalize(k);
      z = s * encode(x, &gen);
    } else if (t > 20) {
      auto grad = residual_grad(z / s, y, m, stats, /*scale_free=*/false);
      z = z - lam * grad;
    }
  }
  return norm.denormalize(decode(z / s), stats).to(y.scalar_type());
}

}  // namespace kldm
