// SPDX-License-Identifier: MIT
// kldm::Sampler: the cgs and cgs-ref samplers of kspace_ldm.sampling.cgs in C++, on AOTInductor
// packages made by `kldm export`. Every step mirrors the Python reference line for line (same
// tensor arithmetic, same order of random draws from one seeded CPU generator), so the parity
// tests can compare the two to 1e-4; comments name the Python counterpart where it helps.
// This file: the network wrappers and the consistency/guidance steps both algorithms share, the
// input checks, and the public API; the other parts are listed in sampler_impl.h.
#include "kldm/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <tuple>

#include "kldm/ops.h"
#include "normalizer.h"
#include "sampler_impl.h"

namespace kldm {

at::Tensor Sampler::Impl::randn(at::IntArrayRef shape, at::Generator& gen) const {
  // Python: torch.randn(shape, generator=gen) on the CPU, then moved (the same stream on every
  // device).
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(device);
}

// posterior mode (mean) or sample
at::Tensor Sampler::Impl::encode(const at::Tensor& x, at::Generator* gen) const {
  auto out = run(encoder, {x.to(at::kFloat)});
  if (gen != nullptr && is_kl && sample_posterior)
    return out[0] + out[1] * randn(out[0].sizes(), *gen);
  return out[0];
}

at::Tensor Sampler::Impl::decode(const at::Tensor& z) const { return run(decoder, {z})[0]; }

at::Tensor Sampler::Impl::vjp(const at::Tensor& z, const at::Tensor& g) const {
  if (!decoder_vjp.loader)
    throw Error(
        "sampler: gradient guidance needs the decoder_vjp package, which this export "
        "leaves out (kldm export --no-guidance); use guidance 0 or export again");
  return run(decoder_vjp, {z, g.to(at::kFloat)})[0];
}

at::Tensor Sampler::Impl::model_output(const at::Tensor& z, int64_t t) const {
  auto tt = at::full({z.size(0)}, t, at::TensorOptions().dtype(at::kLong).device(device));
  return run(denoiser, {z, tt})[0];
}

std::pair<at::Tensor, at::Tensor> Sampler::Impl::eps_x0(const at::Tensor& z, int64_t t) const {
  auto a = alphas_cumprod[t];
  auto sa = a.sqrt(), sb = (1 - a).sqrt();
  auto out = model_output(z, t);
  if (prediction_type == "v_prediction") return {sa * out + sb * z, sa * z - sb * out};
  return {out, (z - sb * out) / sa};
}

at::Tensor Sampler::Impl::as_mask(const at::Tensor& mask, const at::Tensor& k) const {
  auto m = mask.to(device).to(at::kBool);
  if (m.dim() == 1)
    m = m.reshape({1, 1, 1, -1});
  else if (m.dim() == 2)
    m = m.reshape({1, 1, m.size(0), m.size(1)});
  if (m.dim() != 4 || m.size(-1) != k.size(-1) || (m.size(-2) != 1 && m.size(-2) != k.size(-2)))
    throw Error("mask: shape " + std::string(c10::str(mask.sizes())) + " does not fit k-space " +
                std::string(c10::str(k.sizes())));
  return m;
}

void Sampler::Impl::check(const at::Tensor& y) const {
  if (!y.defined() || !y.is_complex() || y.dim() != 4)
    throw Error("k-space must be complex [B, C, H, W]");
  if (y.size(1) != info.coils || y.size(2) != info.height || y.size(3) != info.width)
    throw Error("k-space shape " + std::string(c10::str(y.sizes())) +
                " does not match the export ([B, " + std::to_string(info.coils) + ", " +
                std::to_string(info.height) + ", " + std::to_string(info.width) +
                "]); export for this size with kldm export --size");
  if (y.device() != device)
    throw Error("k-space is on " + y.device().str() + " but the sampler runs on " + device.str());
  if (!at::isfinite(y).all().item<bool>()) throw Error("k-space contains NaN or Inf");
}

// _decoded: decode the clean estimate, (re)fit the statistics.
std::pair<at::Tensor, NormStats> Sampler::Impl::decoded(const at::Tensor& x0, const at::Tensor& y,
                                                        const at::Tensor& m, NormStats stats,
                                                        bool refit, const NormStats& anchor) const {
  auto x = decode(x0 / scale_factor);
  if (refit) stats = detail::refit_stats(norm, x, y, m, anchor);
  return {norm.denormalize(x, stats).to(y.scalar_type()), stats};
}

// _consistent_latent: replace the measured samples (or the hook's projection), re-encode.
at::Tensor Sampler::Impl::consistent_latent(const at::Tensor& k_in, const at::Tensor& y,
                                            const at::Tensor& m, const NormStats& stats,
                                            const CgsHooks* hooks) const {
  auto k =
      hooks != nullptr && hooks->project ? hooks->project(k_in) : kldm::dc_project(k_in, y, m, 1.0);
  return scale_factor * encode(norm.normalize_with(k, stats), nullptr);
}

// _consistency: decode, (re)fit, + bias, make consistent, re-encode.
std::pair<at::Tensor, NormStats> Sampler::Impl::consistency(
    const at::Tensor& x0, const at::Tensor& y, const at::Tensor& m, NormStats stats, bool refit,
    const NormStats& anchor, const CgsHooks* hooks, const at::Tensor& bias) const {
  at::Tensor k;
  std::tie(k, stats) = decoded(x0, y, m, stats, refit, anchor);
  if (bias.defined()) k = k + bias;
  return {consistent_latent(k, y, m, stats, hooks), stats};
}

// d loss / d latent for loss = sum |M (denorm(decode(u)) - y)|^2 / energy (energy 1: raw units).
at::Tensor Sampler::Impl::residual_grad(const at::Tensor& u, const at::Tensor& y,
                                        const at::Tensor& m, const NormStats& stats,
                                        bool scale_free) const {
  auto x = decode(u);
  auto k = norm.denormalize(x, stats).to(y.scalar_type());
  auto mk = m.to(k.scalar_type());
  // kldm::dc_residual's r = M (k - y); d sum|r|^2 / dk = 2 M r (the op's autograd formula, which
  // is registered from Python only, so it is applied here by hand).
  auto r = std::get<0>(kldm::dc_residual(k, y, m));
  auto g = 2.0 * detail::complex_to_channels(r * mk);
  if (scale_free) {
    auto energy = (y * mk).abs().square().sum().clamp_min(1e-30);
    g = g / energy;
  }
  return vjp(u, norm.denormalize_vjp(x, stats, g));
}

std::string Sampler::Impl::resolve_start(const SamplerOptions& o) const {
  const std::string start = o.start.empty() ? cgs_start : o.start;
  if (start != "cs-wavelet" && start != "zero-filled")
    throw Error("sampler: unknown start '" + start + "' (available: cs-wavelet, zero-filled)");
  return start;
}

Sampler::Sampler(const std::string& export_dir, c10::Device device,
                 const std::string& expect_manifest_sha256)
    : impl_(new Impl) {
  impl_->device = device;
  impl_->load(export_dir, expect_manifest_sha256);
}
Sampler::~Sampler() = default;
Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;

const ExportInfo& Sampler::info() const { return impl_->info; }
double Sampler::network_seconds() const { return impl_->net_seconds; }
int64_t Sampler::network_calls() const { return impl_->net_calls; }
void Sampler::reset_timers() const {
  impl_->net_seconds = 0.0;
  impl_->net_calls = 0;
}
void Sampler::set_profiling(bool on) { impl_->profiling = on; }
void Sampler::set_cuda_graphs(bool on) { impl_->use_graphs = on; }  // captures are kept
bool Sampler::cuda_graphs() const { return impl_->use_graphs && impl_->device.is_cuda(); }
int64_t Sampler::cuda_graph_count() const { return impl_->graph_count(); }
const std::string& Sampler::cuda_graph_error() const { return impl_->graph_error; }

Reconstruction Sampler::reconstruct(const at::Tensor& kspace, const at::Tensor& mask,
                                    const SamplerOptions& options) const {
  const Impl& s = *impl_;
  const bool agnostic = s.coil_agnostic(kspace, options);
  if (!agnostic) s.check(kspace);
  auto y = kspace.to(at::kComplexFloat);
  auto m = s.as_mask(mask, y);
  c10::AutoGradMode no_grad(false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  at::Tensor k;
  if (agnostic) {
    k = s.sense_cgs(y, m, options, gen);  // sense_cgs.cpp
  } else if (options.sampler == "cgs") {
    const int64_t n = options.samples;
    if (n < 1) throw Error("sampler: samples must be >= 1");
    // KspaceLDMSampler.start_kspace: the CS start, single-coil exports only.
    CgsHooks hooks;
    if (s.resolve_start(options) == "cs-wavelet" && s.info.coils == 1) {
      auto x = detail::cs_start_image(y, m, s.cs_lam, s.cs_iterations, at::Tensor());
      hooks.start = kldm::dc_project(kldm::fft2c(x).to(y.scalar_type()), y, m, 1.0);
    }
    k = s.cgs(y, m, options, gen, &hooks);
    for (int64_t i = 1; i < n; ++i) k = k + s.cgs(y, m, options, gen, &hooks);
    // every sample equals the data on the measured samples, so their mean does too
    k = kldm::dc_project(k / static_cast<double>(n), y, m, 1.0);
  } else if (options.sampler == "cgs-ref") {
    k = s.cgs_ref(y, m, options, gen);
  } else {
    throw Error("sampler: unknown sampler '" + options.sampler + "' (available: cgs, cgs-ref)");
  }
  auto image = kldm::rss(kldm::ifft2c(k));
  return {k, image};
}

}  // namespace kldm
