// SPDX-License-Identifier: MIT
// kldm::Sampler::Impl (private to libkldm): the state of a loaded export and its member functions,
// defined by concern in
//   manifest.cpp        reading manifest.json and loading the sha256-checked packages (load)
//   package_runner.cpp  network calls: batch chunking, timing, CUDA graph capture and replay (run)
//   sampler.cpp         the networks, consistency and guidance steps both algorithms use, checks,
//                       and the public kldm::Sampler API
//   cgs.cpp             the cgs algorithm;  cgs_ref.cpp  the cgs-ref algorithm
//   cs_start.cpp        the cs-wavelet image cgs starts from
//   sense_cgs.cpp       cgs on multi-coil data with a single-coil model (SENSE consistency);
//   espirit.cpp         its ESPIRiT maps (kldm/espirit.h)
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#ifdef KLDM_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#endif

#include "json.h"
#include "kldm/sampler.h"
#include "normalizer.h"

namespace kldm {

using detail::NormStats;
namespace fs = std::filesystem;

namespace detail {

struct DdpmTable {
  std::vector<double> sqrt_alpha_prod_t, sqrt_beta_prod_t, pred_original_sample_coeff,
      current_sample_coeff, noise_std;
};

}  // namespace detail

using detail::DdpmTable;

// Replacements of cgs's consistency steps (kspace_ldm.sampling.cgs, cgs(project=, final=,
// start=)); the coil-agnostic multi-coil path (sense_cgs.cpp) passes its SENSE versions.
struct CgsHooks {
  std::function<at::Tensor(const at::Tensor&)> project;  // replaces dc_project inside the loop
  std::function<at::Tensor(const at::Tensor&)> final;    // replaces the final dc_project
  at::Tensor start;                                      // encoded first instead of y
  // cgs(residual=): keep this fraction of the first stage's error on the start (0: none)
  double residual = 0.0;
};

struct Sampler::Impl {
  ExportInfo info;
  c10::Device device = c10::Device(c10::kCPU);
  detail::Normalizer norm;
  bool is_kl = false, sample_posterior = false;
  double scale_factor = 1.0;
  std::string prediction_type = "epsilon";
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  at::Tensor alphas_cumprod;  // [T] float32 on the device
  DdpmTable ddpm;
  int64_t cgs_steps = 5, cgs_t0 = 150, ref_t0 = 100, cgs_samples = 1;
  double cgs_guidance = 0.0, cgs_eta = 0.0, ref_guidance = 100.0;
  bool cgs_refit = true;
  // cgs's start (sampler_defaults.cgs.start; "zero-filled" for exports that predate it) and the
  // cs-wavelet settings of the CS start (sampler_defaults.cs_start: kspace_ldm.sampling.cs).
  std::string cgs_start = "zero-filled";
  double cs_lam = 0.001, cs_lam_multicoil = 0.01;
  int64_t cs_iterations = 200;
  // Coil-agnostic multi-coil defaults (kspace_ldm.sampling.sense_dc.SENSE_DEFAULTS; the manifest's
  // sampler_defaults.sense when it has them) and the ESPIRiT settings (sampler_defaults.espirit).
  double sense_lam = 0.5, sense_final_lam = 0.1, sense_start_lam = 0.5;
  int64_t sense_iters = 8, sense_final_iters = 5, sense_start_iters = 10;
  double sense_residual = 0.0;  // exports without sense.residual kept none
  int64_t espirit_kernel = 6, espirit_calib = 24;
  double espirit_threshold = 0.001, espirit_crop = 0.8;  // exports without "espirit"
  // One network call captured as a CUDA graph: static input and output buffers, replayed with
  // new inputs copied in. `eager_calls` counts the calls before capture (the first runs eagerly:
  // it loads the package's kernels and creates library handles, which cannot happen in capture).
  struct GraphSlot {
#ifdef KLDM_WITH_CUDA
    std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
    std::vector<at::Tensor> in, out;
    int64_t eager_calls = 0;
  };
  // A package and the batch sizes it accepts (one for a static export).
  struct Package {
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
    int64_t min_batch = 1, max_batch = 1;
    std::string name;
    mutable std::map<std::vector<int64_t>, GraphSlot> graphs;  // by input shapes
  };
  Package encoder, decoder, decoder_vjp, denoiser;
  mutable double net_seconds = 0.0;
  mutable int64_t net_calls = 0;
  bool use_graphs = true;  // CUDA only
  bool profiling = false;
  mutable std::string graph_error;  // why capture failed (then every call runs eagerly)

  void load(const std::string& dir, const std::string& expect_sha256);

  void parse_manifest(const json::Value& doc, const fs::path& root);

  // Network calls, chunked to the exported batch size when the batch is static.
  std::vector<at::Tensor> run(const Package& pkg, std::vector<at::Tensor> inputs) const;

  void sync() const;

  // One package call at fixed shapes: eager, or (CUDA) replayed from a captured graph. A CUDA
  // graph replaces the hundreds of kernel launches of a network (the cost of small latents on a
  // GPU) by one; the sampler loop calls every network with the same shapes, so each
  // (package, shapes) is captured once, on its second call, and replayed from then on.
  std::vector<at::Tensor> call(const Package& pkg, std::vector<at::Tensor> in) const;

#ifdef KLDM_WITH_CUDA
  void capture(const Package& pkg, GraphSlot& g, const std::vector<at::Tensor>& in) const;
#endif

  int64_t graph_count() const;

  at::Tensor randn(at::IntArrayRef shape, at::Generator& gen) const;

  // posterior mode (mean) or sample
  at::Tensor encode(const at::Tensor& x, at::Generator* gen) const;

  at::Tensor decode(const at::Tensor& z) const;

  at::Tensor vjp(const at::Tensor& z, const at::Tensor& g) const;

  at::Tensor model_output(const at::Tensor& z, int64_t t) const;

  std::pair<at::Tensor, at::Tensor> eps_x0(const at::Tensor& z, int64_t t) const;

  at::Tensor as_mask(const at::Tensor& mask, const at::Tensor& k) const;

  void check(const at::Tensor& y) const;

  // _decoded: decode the clean estimate to k-space of y's dtype, first (re)fitting the
  // statistics if `refit`.
  std::pair<at::Tensor, NormStats> decoded(const at::Tensor& x0, const at::Tensor& y,
                                           const at::Tensor& m, NormStats stats, bool refit,
                                           const NormStats& anchor) const;

  // _consistent_latent: replace the measured samples of k (or hooks->project), re-encode.
  at::Tensor consistent_latent(const at::Tensor& k, const at::Tensor& y, const at::Tensor& m,
                               const NormStats& stats, const CgsHooks* hooks) const;

  // _consistency: decoded, + bias (the kept first-stage error; undefined: none),
  // consistent_latent.
  std::pair<at::Tensor, NormStats> consistency(const at::Tensor& x0, const at::Tensor& y,
                                               const at::Tensor& m, NormStats stats, bool refit,
                                               const NormStats& anchor,
                                               const CgsHooks* hooks = nullptr,
                                               const at::Tensor& bias = at::Tensor()) const;

  // d loss / d latent for loss = sum |M (denorm(decode(u)) - y)|^2 / energy (energy 1: raw units).
  at::Tensor residual_grad(const at::Tensor& u, const at::Tensor& y, const at::Tensor& m,
                           const NormStats& stats, bool scale_free) const;

  // One DDIM step from the consistent estimate x0 with the model's eps (kldm::ddim_step).
  at::Tensor ddim_update(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& a_t,
                         const at::Tensor& a_p, double eta, at::Generator& gen) const;

  at::Tensor cgs(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                 at::Generator& gen, const CgsHooks* hooks = nullptr) const;

  // Whether `y` [B, C, H, W] goes through the coil-agnostic path (o.coil_combine, o.maps).
  bool coil_agnostic(const at::Tensor& y, const SamplerOptions& o) const;

  // The coil-agnostic multi-coil sampler (kspace_ldm.sampling.sense_dc.coil_agnostic_sample):
  // y [B, C, H, W] complex64, m its mask; returns coil k-space [B, C, H, W].
  at::Tensor sense_cgs(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                       at::Generator& gen) const;

  at::Tensor cgs_ref(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                     at::Generator& gen) const;

  // o.start, else the manifest's default; checked ("cs-wavelet" | "zero-filled").
  std::string resolve_start(const SamplerOptions& o) const;
};

namespace detail {
// The cs-wavelet image cgs starts from (cs_start.cpp; kspace_ldm.sampling.cgs_refine.cs_start):
// y [B, C, H, W] complex64 measured k-space, m its bool mask [B|1, 1, H|1, W], maps [B|1, C, H, W]
// for C > 1 (undefined: single-coil) -> [B, 1, H, W] complex image, no data consistency applied.
at::Tensor cs_start_image(const at::Tensor& y, const at::Tensor& m, double lam, int64_t iterations,
                          const at::Tensor& maps);
}  // namespace detail

}  // namespace kldm
