// SPDX-License-Identifier: MIT
// kldm::Sampler: the cgs and cgs-ref samplers of kspace_ldm.sampling.cgs in C++, on AOTInductor
// packages made by `kldm export`. Every step mirrors the Python reference line for line (same
// tensor arithmetic, same order of random draws from one seeded CPU generator), so the parity
// tests can compare the two to 1e-4; comments name the Python counterpart where it helps.
#include "kldm/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#ifdef KLDM_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "json.h"
#include "kldm/build_config.h"
#include "kldm/ops.h"
#include "normalizer.h"
#include "sha256.h"

namespace kldm {

using detail::NormStats;
namespace fs = std::filesystem;

namespace {

std::string torch_version_base(std::string v) {
  auto plus = v.find('+');
  return plus == std::string::npos ? v : v.substr(0, plus);
}

struct DdpmTable {
  std::vector<double> sqrt_alpha_prod_t, sqrt_beta_prod_t, pred_original_sample_coeff,
      current_sample_coeff, noise_std;
};

}  // namespace

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

  // ---------------------------------------------------------------------------------------------
  void load(const std::string& dir, const std::string& expect_sha256) {
    fs::path root(dir);
    fs::path mpath = root / "manifest.json";
    if (!fs::is_directory(root)) throw Error(dir + ": export directory does not exist");
    if (!fs::is_regular_file(mpath))
      throw Error(dir + ": not an export directory (no manifest.json); make one with kldm export");
    std::ifstream in(mpath, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string bytes = ss.str();
    if (!expect_sha256.empty()) {
      // Checked on the very bytes parsed below, before any package is opened.
      std::string want = expect_sha256;
      for (auto& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const std::string got = sha256_bytes(bytes);
      if (got != want)
        throw Error(mpath.string() + ": sha256 " + got + " differs from the pinned " +
                    "--expect-sha256 " + expect_sha256 + "; refusing to load the packages");
    }
    json::Value m;
    try {
      m = json::parse(bytes);
    } catch (const std::exception& e) {
      throw Error(mpath.string() + ": " + e.what());
    }
    try {
      parse_manifest(m, root);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(mpath.string() + ": " + e.what());
    }
  }

  void parse_manifest(const json::Value& doc, const fs::path& root) {
    const std::string mpath = (root / "manifest.json").string();
    const json::Fields m(doc);
    if (!m.has("format") || m.text("format") != "kspace-ldm-export" ||
        m.integer("format_version") != 1)
      throw Error(mpath + ": not a kspace-ldm-export v1 manifest");
    info.directory = root.string();
    info.torch_version = m.text("torch_version");
    info.kspace_ldm_version = m.text("kspace_ldm_version");
    const std::string here = torch_version_base(KLDM_TORCH_VERSION);
    if (info.torch_version != here)
      throw Error(mpath + ": packages were made by torch " + info.torch_version +
                  " but this library was built against torch " + here +
                  "; re-export with this torch");
    info.device = m.text("device");
    const std::string want = device.is_cuda() ? "cuda" : device.is_cpu() ? "cpu" : device.str();
    if (info.device != want)
      throw Error(mpath + ": packages were exported for " + info.device + ", not " + want +
                  " (export again with --device " + want + ")");
    info.coils = m.integer("coils");
    info.height = m.integer("height");
    info.width = m.integer("width");
    info.batch = m.integer("batch");
    info.dynamic_batch = m.flag("dynamic_batch");

    const auto fsg = m.sub("first_stage");
    is_kl = fsg.flag("is_kl");
    sample_posterior = fsg.flag("sample_posterior");
    const auto n = m.sub("normalization");
    norm.mode = n.text("mode");
    norm.acs_fraction = n.number("acs_fraction");
    norm.weighting = n.text("weighting");
    norm.weight_power = n.number("weight_power");
    norm.weight_r0 = n.number("weight_r0");
    norm.log_c = n.number("log_c");
    norm.log_clamp = n.number("log_clamp");
    norm.eps = n.number("eps");
    const auto r = m.sub("norm_ratio");
    if (!r.at("scale").is_null()) norm.ratio_scale = r.numbers("scale");
    if (!r.at("shift").is_null()) norm.ratio_shift = r.numbers("shift");
    scale_factor = m.number("scale_factor");

    const auto s = m.sub("scheduler");
    info.num_train_timesteps = s.integer("num_train_timesteps");
    prediction_type = s.text("prediction_type");
    clip_sample = s.flag("clip_sample");
    clip_sample_range = s.number("clip_sample_range");
    auto ac = s.numbers("alphas_cumprod");
    if (static_cast<int64_t>(ac.size()) != info.num_train_timesteps)
      throw Error(mpath + ": scheduler.alphas_cumprod has the wrong length");
    alphas_cumprod = at::tensor(std::vector<float>(ac.begin(), ac.end()), at::kFloat).to(device);
    const auto d = s.sub("ddpm_step");
    ddpm.sqrt_alpha_prod_t = d.numbers("sqrt_alpha_prod_t");
    ddpm.sqrt_beta_prod_t = d.numbers("sqrt_beta_prod_t");
    ddpm.pred_original_sample_coeff = d.numbers("pred_original_sample_coeff");
    ddpm.current_sample_coeff = d.numbers("current_sample_coeff");
    ddpm.noise_std = d.numbers("noise_std");
    for (const auto* v :
         {&ddpm.sqrt_alpha_prod_t, &ddpm.sqrt_beta_prod_t, &ddpm.pred_original_sample_coeff,
          &ddpm.current_sample_coeff, &ddpm.noise_std})
      if (static_cast<int64_t>(v->size()) != info.num_train_timesteps)
        throw Error(mpath + ": scheduler.ddpm_step has the wrong length");

    const auto c = m.sub("sampler_defaults").sub("cgs");
    cgs_steps = c.integer("steps");
    cgs_t0 = c.integer("t0");
    cgs_guidance = c.number("guidance");
    cgs_eta = c.number("eta");
    cgs_refit = c.flag("refit");
    cgs_samples = c.integer("samples");
    const auto cr = m.sub("sampler_defaults").sub("cgs-ref");
    ref_t0 = cr.integer("t0");
    ref_guidance = cr.number("guidance");

    // Verify every package before loading any: a tampered file is refused, never run.
    const auto pk = m.sub("packages");
    auto load_pkg = [&](const char* name) {
      const auto e = pk.sub(name);
      fs::path f = root / e.text("file");
      if (!fs::is_regular_file(f)) throw Error(f.string() + ": package file missing");
      if (sha256_file(f.string()) != e.text("sha256"))
        throw Error(f.string() + ": sha256 does not match the manifest (file modified or corrupt)");
      return f.string();
    };
    const char* names[4] = {"encoder", "decoder", "decoder_vjp", "denoiser"};
    std::string paths[4];
    for (int i = 0; i < 4; ++i)  // decoder_vjp is optional (kldm export --no-guidance)
      if (i != 2 || pk.has("decoder_vjp")) paths[i] = load_pkg(names[i]);
    const c10::DeviceIndex index = device.is_cuda() ? device.index() : -1;
    auto open = [&](const std::string& p) {
      try {
        // run_single_threaded: no per-run CUDA event, so a run can be captured into a CUDA graph
        // and the package still run eagerly afterwards (a Sampler serves one thread anyway).
        return std::make_unique<torch::inductor::AOTIModelPackageLoader>(p, "model", true, 1,
                                                                         index);
      } catch (const std::exception& e) {
        std::string what = e.what();
        throw Error(p + ": cannot load the package (" + what.substr(0, what.find('\n')) + ")");
      }
    };
    Package* slots[4] = {&encoder, &decoder, &decoder_vjp, &denoiser};
    for (int i = 0; i < 4; ++i) {
      if (paths[i].empty()) continue;
      slots[i]->loader = open(paths[i]);
      slots[i]->name = names[i];
      auto range = pk.sub(names[i]).numbers("batch_range");
      if (range.size() != 2 || range[0] < 1 || range[1] < range[0])
        throw Error(mpath + ": packages." + names[i] + ".batch_range must be [min, max]");
      slots[i]->min_batch = static_cast<int64_t>(range[0]);
      slots[i]->max_batch = static_cast<int64_t>(range[1]);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Network calls, chunked to the exported batch size when the batch is static.
  std::vector<at::Tensor> run(const Package& pkg, std::vector<at::Tensor> inputs) const {
    // Chunks of at most max_batch samples; a chunk below min_batch is padded with copies of its
    // last sample and the padding dropped from the outputs (exact: every network is per-sample).
    const int64_t B = inputs[0].size(0);
    if (profiling) sync();
    auto t_start = std::chrono::steady_clock::now();
    std::vector<std::vector<at::Tensor>> parts;
    for (int64_t s = 0; s < B; s += pkg.max_batch) {
      const int64_t n = std::min(pkg.max_batch, B - s);
      const int64_t pad = std::max<int64_t>(0, pkg.min_batch - n);
      std::vector<at::Tensor> in;
      for (auto& t : inputs) {
        auto c = t.narrow(0, s, n);
        if (pad > 0) {
          auto sz = c.sizes().vec();
          sz[0] = pad;
          c = at::cat({c, c.narrow(0, n - 1, 1).expand(sz)}, 0);
        }
        in.push_back(c.contiguous());
      }
      auto o = call(pkg, std::move(in));
      if (pad > 0)
        for (auto& t : o) t = t.narrow(0, 0, n);
      parts.push_back(std::move(o));
      ++net_calls;
    }
    std::vector<at::Tensor> out;
    for (size_t i = 0; i < parts[0].size(); ++i) {
      std::vector<at::Tensor> cat;
      for (auto& p : parts) cat.push_back(p[i]);
      out.push_back(cat.size() == 1 ? cat[0].contiguous() : at::cat(cat, 0));
    }
    if (profiling) {
      sync();
      net_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    }
    return out;
  }

  void sync() const {
    if (device.is_cuda())
      c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->synchronizeDevice(device.index());
  }

  // One package call at fixed shapes: eager, or (CUDA) replayed from a captured graph. A CUDA
  // graph replaces the hundreds of kernel launches of a network (the cost of small latents on a
  // GPU) by one; the sampler loop calls every network with the same shapes, so each
  // (package, shapes) is captured once, on its second call, and replayed from then on.
  std::vector<at::Tensor> call(const Package& pkg, std::vector<at::Tensor> in) const {
#ifdef KLDM_WITH_CUDA
    if (device.is_cuda() && use_graphs && graph_error.empty()) {
      std::vector<int64_t> key;
      for (const auto& t : in) {
        key.insert(key.end(), t.sizes().begin(), t.sizes().end());
        key.push_back(-1);
      }
      GraphSlot& g = pkg.graphs[key];
      if (!g.graph) {
        if (g.eager_calls++ == 0) return pkg.loader->run(in);
        try {
          capture(pkg, g, in);
        } catch (const std::exception& e) {
          // Never fatal: note why (Sampler::graph_error) and run every call eagerly from now on.
          std::string what = e.what();
          graph_error = pkg.name + ": " + what.substr(0, what.find('\n'));
          pkg.graphs.clear();
          return pkg.loader->run(in);
        }
      } else {
        for (size_t i = 0; i < in.size(); ++i) g.in[i].copy_(in[i]);
      }
      g.graph->replay();
      std::vector<at::Tensor> out;
      for (const auto& o : g.out) out.push_back(o.clone());  // the next replay overwrites g.out
      return out;
    }
#endif
    return pkg.loader->run(in);
  }

#ifdef KLDM_WITH_CUDA
  void capture(const Package& pkg, GraphSlot& g, const std::vector<at::Tensor>& in) const {
    g.in.clear();
    for (const auto& t : in) g.in.push_back(t.clone());
    // Capture runs on a side stream (never the legacy default stream); the package runs on the
    // current stream, which the guard sets. Capturing executes nothing, so no ordering with the
    // main stream is needed: the replays run on it, after the inputs are copied in.
    auto side = c10::cuda::getStreamFromPool(false, device.index());
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      // thread-local mode: other threads' CUDA calls (e.g. Python's) do not invalidate it
      graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        g.out = pkg.loader->run(g.in);
      } catch (...) {
        try {
          graph->capture_end();
        } catch (...) {
        }
        g.out.clear();
        throw;
      }
      graph->capture_end();
    }
    g.graph = std::move(graph);
  }
#endif

  int64_t graph_count() const {
    int64_t n = 0;
    for (const Package* p : {&encoder, &decoder, &decoder_vjp, &denoiser})
      for (const auto& kv : p->graphs)
#ifdef KLDM_WITH_CUDA
        n += kv.second.graph ? 1 : 0;
#else
        (void)kv;
#endif
    return n;
  }

  at::Tensor randn(at::IntArrayRef shape, at::Generator& gen) const {
    // Python: torch.randn(shape, generator=gen) on the CPU, then moved (the same stream on every
    // device).
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(device);
  }

  // posterior mode (mean) or sample
  at::Tensor encode(const at::Tensor& x, at::Generator* gen) const {
    auto out = run(encoder, {x.to(at::kFloat)});
    if (gen != nullptr && is_kl && sample_posterior)
      return out[0] + out[1] * randn(out[0].sizes(), *gen);
    return out[0];
  }
  at::Tensor decode(const at::Tensor& z) const { return run(decoder, {z})[0]; }
  at::Tensor vjp(const at::Tensor& z, const at::Tensor& g) const {
    if (!decoder_vjp.loader)
      throw Error(
          "sampler: gradient guidance needs the decoder_vjp package, which this export "
          "leaves out (kldm export --no-guidance); use guidance 0 or export again");
    return run(decoder_vjp, {z, g.to(at::kFloat)})[0];
  }
  at::Tensor model_output(const at::Tensor& z, int64_t t) const {
    auto tt = at::full({z.size(0)}, t, at::TensorOptions().dtype(at::kLong).device(device));
    return run(denoiser, {z, tt})[0];
  }

  std::pair<at::Tensor, at::Tensor> eps_x0(const at::Tensor& z, int64_t t) const {
    auto a = alphas_cumprod[t];
    auto sa = a.sqrt(), sb = (1 - a).sqrt();
    auto out = model_output(z, t);
    if (prediction_type == "v_prediction") return {sa * out + sb * z, sa * z - sb * out};
    return {out, (z - sb * out) / sa};
  }

  // ---------------------------------------------------------------------------------------------
  at::Tensor as_mask(const at::Tensor& mask, const at::Tensor& k) const {
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

  void check(const at::Tensor& y) const {
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

  // _consistency: decode the clean estimate, (re)fit the statistics, replace the measured
  // samples, re-encode.
  std::pair<at::Tensor, NormStats> consistency(const at::Tensor& x0, const at::Tensor& y,
                                               const at::Tensor& m, NormStats stats, bool refit,
                                               const NormStats& anchor) const {
    const double s = scale_factor;
    auto x = decode(x0 / s);
    if (refit) stats = detail::refit_stats(norm, x, y, m, anchor);
    auto k = kldm::dc_project(norm.denormalize(x, stats).to(y.scalar_type()), y, m, 1.0);
    auto z = encode(norm.normalize_with(k, stats), nullptr);
    return {s * z, stats};
  }

  // d loss / d latent for loss = sum |M (denorm(decode(u)) - y)|^2 / energy (energy 1: raw units).
  at::Tensor residual_grad(const at::Tensor& u, const at::Tensor& y, const at::Tensor& m,
                           const NormStats& stats, bool scale_free) const {
    auto x = decode(u);
    auto k = norm.denormalize(x, stats);
    auto mk = m.to(k.scalar_type());
    auto r = (k - y) * mk;
    auto g = 2.0 * detail::complex_to_channels(r * mk);
    if (scale_free) {
      auto energy = (y * mk).abs().square().sum().clamp_min(1e-30);
      g = g / energy;
    }
    return vjp(u, norm.denormalize_vjp(x, stats, g));
  }

  at::Tensor cgs(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
                 at::Generator& gen) const {
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
    auto z = encode(norm.normalize_with(y, stats), nullptr);
    auto x0 = s * z;
    std::tie(x0, stats) = consistency(x0, y, m, stats, o.refit, anchor);
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
      x0 = consistency(x0, y, m, stats, false, anchor).first;
      const int64_t tp = ts[i + 1];
      auto a_t = ac[t], a_p = ac[tp];
      auto sigma = o.eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).clamp_min(0).sqrt();
      zt = a_p.sqrt() * x0 + (1 - a_p - sigma.square()).clamp_min(0).sqrt() * eps;
      if (o.eta > 0) zt = zt + sigma * randn(zt.sizes(), gen);
    }
    auto k = norm.denormalize(decode(x0 / s), stats).to(y.scalar_type());
    return kldm::dc_project(k, y, m, 1.0);
  }

  at::Tensor cgs_ref(const at::Tensor& y, const at::Tensor& m, const SamplerOptions& o,
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
};

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
  s.check(kspace);
  auto y = kspace.to(at::kComplexFloat);
  auto m = s.as_mask(mask, y);
  c10::AutoGradMode no_grad(false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  at::Tensor k;
  if (options.sampler == "cgs") {
    const int64_t n = options.samples;
    if (n < 1) throw Error("sampler: samples must be >= 1");
    k = s.cgs(y, m, options, gen);
    for (int64_t i = 1; i < n; ++i) k = k + s.cgs(y, m, options, gen);
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
