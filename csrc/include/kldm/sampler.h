// SPDX-License-Identifier: MIT
// kldm::Sampler: consistency-guided latent diffusion reconstruction from C++, no Python.
//
// It loads an export directory made by `kldm export` (AOTInductor packages of the first stage's
// encoder, decoder and decoder vector-Jacobian product and of the latent denoiser, plus
// manifest.json), verifies the sha256 of every package and the torch version, and runs the `cgs`
// and `cgs-ref` samplers with the same defaults and the same seeded random stream as the Python
// sampler (kspace_ldm.sampling.cgs): the same inputs, seed and models give the same reconstruction.
//
//   kldm::Sampler sampler("export_dir", torch::kCPU);
//   kldm::SamplerOptions opt;                  // opt.sampler = "cgs" (default) or "cgs-ref"
//   opt.seed = 0;
//   kldm::Reconstruction r = sampler.reconstruct(kspace, mask, opt);
//   // kspace: [B, C, H, W] complex64 (zero where not sampled); mask: [W], [H, W] or [B, 1, 1, W]
//   // r.kspace: [B, C, H, W] complex64 (equal to kspace on every measured sample for cgs)
//   // r.image:  [B, H, W] float32, root-sum-of-squares of the centred inverse FFT
//
// A single-coil export also reconstructs multi-coil k-space (SamplerOptions::coil_combine, the
// coil-agnostic path of kspace_ldm.sampling.sense_dc; ESPIRiT maps from kldm/espirit.h).
//
// Bad input (wrong directory, tampered package, torch version mismatch, shapes, device, NaN/Inf)
// throws kldm::Error with a one-line message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace kldm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The same fields, names and defaults as kspace_ldm.sampling.cgs.SamplerOptions (the Python
// binding converts one into the other field by field); steps / t0 / guidance unset: the sampler's
// default, which the export manifest carries (sampler_defaults, the Python CGS_DEFAULTS and
// CGS_REF_DEFAULTS).
struct SamplerOptions {
  std::string sampler = "cgs";     // "cgs" | "cgs-ref" (checked by Sampler::reconstruct)
  std::optional<int64_t> steps;    // cgs DDIM steps (default from the manifest: 2)
  std::optional<int64_t> t0;       // SDEdit start timestep (cgs 50, cgs-ref 100)
  std::optional<double> guidance;  // cgs: scale-free step (0); cgs-ref: lambda (100)
  double eta = 0.0;                // cgs DDIM stochasticity
  bool refit = true;               // cgs: fit the normalisation statistics to the measured samples
  int64_t samples = 1;             // cgs: average this many samples (posterior-mean estimate)
  uint64_t seed = 0;               // seeds the CPU generator of every random draw
  // cgs: what is encoded first: "cs-wavelet" (the L1-wavelet CS image, measured samples put back),
  // "zero-filled" (the measured k-space), "" = the manifest's default (exports made before the
  // default was recorded: zero-filled). The per-coil-channel multi-coil path starts zero-filled.
  std::string start;
  // Multi-coil k-space (C > 1): "espirit" runs a single-coil export coil-agnostically (cgs on the
  // ESPIRiT-combined k-space with SENSE data consistency against every coil; the result is coil
  // k-space equal to the data on every measured sample), "channels" feeds the coils to a C-coil
  // export, "auto" (default) is espirit for a single-coil export, channels otherwise.
  std::string coil_combine = "auto";
  at::Tensor
      maps;  // espirit path: [B|1, C, H, W] coil maps to use (undefined: ESPIRiT of the data)
};

struct Reconstruction {
  at::Tensor kspace;  // [B, C, H, W] complex64
  at::Tensor image;   // [B, H, W] float32 (RSS over coils)
};

// What an export directory holds (from its manifest).
struct ExportInfo {
  std::string directory;
  std::string device;         // device the packages were compiled for: "cpu" or "cuda"
  std::string torch_version;  // torch that made them
  std::string kspace_ldm_version;
  int64_t coils = 0, height = 0, width = 0;
  int64_t batch = 1;  // the only batch size unless dynamic_batch
  bool dynamic_batch = false;
  int64_t num_train_timesteps = 0;
};

// One Sampler serves one thread at a time (its packages hold one runner each, and the timers are
// plain counters); give each thread its own Sampler.
class Sampler {
 public:
  // Loads `export_dir`; `device` must be the device the packages were exported for (CUDA: any
  // index). `expect_manifest_sha256`: when not empty, the hex SHA-256 of manifest.json pinned by
  // the caller; the manifest's bytes are checked against it before anything is parsed or loaded
  // (the manifest then covers every package by its own hashes). Throws kldm::Error.
  //
  // The packages are native code: the hashes catch corruption and a swapped file, not an
  // attacker who can write the folder and the pinned hash's source alike.
  Sampler(const std::string& export_dir, c10::Device device = c10::Device(c10::kCPU),
          const std::string& expect_manifest_sha256 = "");
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;

  Reconstruction reconstruct(const at::Tensor& kspace, const at::Tensor& mask,
                             const SamplerOptions& options = SamplerOptions()) const;

  const ExportInfo& info() const;

  // Wall-clock seconds spent inside the network packages since the last reset, and the number of
  // network calls: the benchmark's split between networks and everything else. Seconds are
  // counted only while profiling is on (off by default: on CUDA it synchronises the device around
  // every network call, which costs the overlap of host and device work).
  double network_seconds() const;
  int64_t network_calls() const;
  void reset_timers() const;
  void set_profiling(bool on);

  // CUDA graphs (on by default; CUDA only): each network is captured, per input shape, on its
  // second call and replayed from then on (one launch instead of hundreds). A capture that fails
  // is not fatal: the reason is kept in cuda_graph_error() and every call runs eagerly. Turning
  // graphs off keeps what was captured for when they are turned on again.
  void set_cuda_graphs(bool on);
  bool cuda_graphs() const;
  int64_t cuda_graph_count() const;  // graphs captured so far
  const std::string& cuda_graph_error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lower-case hex SHA-256 of a file (the manifest's package hashes).
std::string sha256_file(const std::string& path);

}  // namespace kldm
