// SPDX-License-Identifier: MIT
// kldm::Sampler: reading an export directory's manifest.json and loading its packages, each
// checked against its sha256 first (see sampler_impl.h for the other parts).
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kldm/build_config.h"
#include "sha256.h"

#include "sampler_impl.h"

namespace kldm {

namespace {

std::string torch_version_base(std::string v) {
  auto plus = v.find('+');
  return plus == std::string::npos ? v : v.substr(0, plus);
}

}  // namespace

void Sampler::Impl::load(const std::string& dir, const std::string& expect_sha256) {
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

void Sampler::Impl::parse_manifest(const json::Value& doc, const fs::path& root) {
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
  if (c.has("start")) cgs_start = c.text("start");
  if (m.sub("sampler_defaults").has("cs_start")) {
    const auto cs = m.sub("sampler_defaults").sub("cs_start");
    cs_lam = cs.number("lam");
    cs_lam_multicoil = cs.number("lam_multicoil");
    cs_iterations = cs.integer("iterations");
  }
  const auto cr = m.sub("sampler_defaults").sub("cgs-ref");
  ref_t0 = cr.integer("t0");
  ref_guidance = cr.number("guidance");
  // The coil-agnostic multi-coil settings; exports made before they were recorded use the same
  // values compiled in (sampler_impl.h).
  if (m.sub("sampler_defaults").has("sense")) {
    const auto se = m.sub("sampler_defaults").sub("sense");
    sense_lam = se.number("lam");
    sense_iters = se.integer("iters");
    sense_final_lam = se.number("final_lam");
    sense_final_iters = se.integer("final_iters");
    sense_start_lam = se.number("start_lam");
    sense_start_iters = se.integer("start_iters");
    // exports made before the kept first-stage error was recorded ran without it
    if (se.has("residual")) sense_residual = se.number("residual");
  }
  if (m.sub("sampler_defaults").has("espirit")) {
    const auto es = m.sub("sampler_defaults").sub("espirit");
    espirit_kernel = es.integer("kernel");
    espirit_calib = es.integer("calib_size");
    espirit_threshold = es.number("threshold");
    espirit_crop = es.number("crop");
  }

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
      return std::make_unique<torch::inductor::AOTIModelPackageLoader>(p, "model", true, 1, index);
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

}  // namespace kldm
