// SPDX-License-Identifier: MIT
// kldm::Sampler: coil-agnostic multi-coil sampling (kspace_ldm.sampling.sense_dc), step for step:
// a single-coil export on C-coil k-space. The first stage and the denoiser see one combined
// k-space; data consistency is against every coil through the SENSE operator A x = M F (S x)
// (the native kldm::sense_forward / sense_adjoint ops):
//   start    CG-SENSE from 0 (start_lam, start_iters); its combined k-space seeds the encoder and,
//            on the measured columns, plays the single-coil measurement of cgs;
//   project  inside cgs: `iters` CG steps on (A^H A + lam I) x = A^H y + lam x_p from x_p;
//   residual cgs keeps this fraction of the first stage's error on the start (sense.residual);
//   final    a prior-regularised solve (final_lam, final_iters), then per-coil replacement of the
//            measured samples (kldm::dc_project): the output equals the data there bit for bit.
// ESPIRiT maps (espirit.cpp) unless the caller passes its own.
#include <ATen/ATen.h>

#include <string>

#include "kldm/espirit.h"
#include "kldm/ops.h"

#include "sampler_impl.h"

namespace kldm {

namespace {

// Per-sample real inner product Re <a, b> as [B, 1, 1, 1].
at::Tensor re_dot(const at::Tensor& a, const at::Tensor& b) {
  return at::real(a.conj() * b).sum({1, 2, 3}, /*keepdim=*/true);
}

// SenseConsistency of one batch (kspace_ldm.sampling.sense_dc.SenseConsistency).
struct SenseConsistency {
  at::Tensor y, mask, maps, aty;  // y [B, C, H, W], mask [B|1, 1, H|1, W], maps [B|1, C, H, W]

  SenseConsistency(at::Tensor y_, at::Tensor mask_, at::Tensor maps_)
      : y(std::move(y_)), mask(std::move(mask_)), maps(std::move(maps_)) {
    aty = kldm::sense_adjoint(y, maps, mask);  // A^H y, [B, 1, H, W]
  }

  // (A^H A + lam I) x for x [B, 1, H, W]
  at::Tensor normal(const at::Tensor& x, double lam) const {
    return kldm::sense_adjoint(kldm::sense_forward(x, maps, mask), maps, mask) + lam * x;
  }

  // `iters` CG steps on (A^H A + lam I) x = A^H y + lam prior from x = prior; per-sample steps.
  at::Tensor solve(const at::Tensor& prior, int64_t iters, double lam) const {
    auto x = prior.clone();
    auto r = aty + lam * prior - normal(x, lam);
    auto p = r.clone();
    auto rr = re_dot(r, r);
    for (int64_t i = 0; i < iters; ++i) {
      auto q = normal(p, lam);
      auto alpha = rr / re_dot(p, q).clamp_min(1e-30);
      x = x + alpha * p;
      r = r - alpha * q;
      auto rr_new = re_dot(r, r);
      p = r + (rr_new / rr.clamp_min(1e-30)) * p;
      rr = rr_new;
    }
    return x;
  }
};

}  // namespace

bool Sampler::Impl::coil_agnostic(const at::Tensor& y, const SamplerOptions& o) const {
  const std::string& mode = o.coil_combine;
  if (mode != "auto" && mode != "espirit" && mode != "channels")
    throw Error("coil_combine: unknown mode '" + mode + "' (auto, espirit, channels)");
  if (!y.defined() || !y.is_complex() || y.dim() != 4) return false;  // check() reports it
  if (o.maps.defined() && mode != "channels") return true;
  // kspace_ldm.recon.coil_agnostic: espirit for single-coil exports on multi-coil data
  return !(mode == "channels" || y.size(1) == 1 || (mode == "auto" && info.coils != 1));
}

at::Tensor Sampler::Impl::sense_cgs(const at::Tensor& y, const at::Tensor& m,
                                    const SamplerOptions& o, at::Generator& gen) const {
  if (o.sampler != "cgs")
    throw Error("sampler: coil-agnostic multi-coil needs cgs, not '" + o.sampler + "'");
  if (info.coils != 1)
    throw Error(
        "sampler: coil-agnostic reconstruction needs a single-coil model, this export takes " +
        std::to_string(info.coils) + " coils (use coil_combine channels)");
  if (y.size(2) != info.height || y.size(3) != info.width)
    throw Error("k-space shape " + std::string(c10::str(y.sizes())) +
                " does not match the export ([B, C, " + std::to_string(info.height) + ", " +
                std::to_string(info.width) + "]); export for this size with kldm export --size");
  if (y.device() != device)
    throw Error("k-space is on " + y.device().str() + " but the sampler runs on " + device.str());
  if (!at::isfinite(y).all().item<bool>()) throw Error("k-space contains NaN or Inf");
  if (o.samples < 1) throw Error("sampler: samples must be >= 1");

  at::Tensor maps = o.maps;
  if (!maps.defined()) {
    EspiritOptions e;
    e.kernel_h = e.kernel_w = espirit_kernel;
    e.calib_h = e.calib_w = espirit_calib;
    e.threshold = espirit_threshold;
    e.crop = espirit_crop;
    maps = kldm::espirit_maps(y, e).first;
  }
  check_maps(maps, y);
  SenseConsistency dc(y, m, maps.to(device, y.scalar_type()));
  // The combined k-space of the CG-SENSE start on the measured columns plays the single-coil
  // measurement for the normalisation statistics; the start image itself seeds the encoder.
  auto k_start = kldm::fft2c(dc.solve(at::zeros_like(dc.aty), sense_start_iters, sense_start_lam));
  auto y_comb = k_start * m;
  // The CS start: the multi-coil cs-wavelet image on the same SENSE model seeds the encoder; the
  // statistics stay those of the CG-SENSE start (sense_dc.coil_agnostic_sample).
  if (resolve_start(o) == "cs-wavelet")
    k_start = kldm::fft2c(detail::cs_start_image(y, m, cs_lam_multicoil, cs_iterations, dc.maps));
  CgsHooks hooks;
  hooks.start = k_start;
  hooks.residual = sense_residual;
  hooks.project = [&](const at::Tensor& k) {
    return kldm::fft2c(dc.solve(kldm::ifft2c(k.contiguous()), sense_iters, sense_lam));
  };
  hooks.final = [&](const at::Tensor& k) {
    auto x = dc.solve(kldm::ifft2c(k.contiguous()), sense_final_iters, sense_final_lam);
    return kldm::dc_project(kldm::sense_forward(x, dc.maps), dc.y, dc.mask, 1.0);
  };
  at::Tensor out;
  for (int64_t i = 0; i < o.samples; ++i) {
    auto k = cgs(y_comb, m, o, gen, &hooks);
    out = out.defined() ? out + k : k;
  }
  return kldm::dc_project(out / static_cast<double>(o.samples), y, m, 1.0);
}

}  // namespace kldm
