// SPDX-License-Identifier: MIT
// ESPIRiT coil sensitivities (Uecker et al., MRM 71:990, 2014) in libtorch: the C++ twin of
// kspace_ldm.physics.espirit (BART `ecalib -m1` semantics), op for op, so the C++ sampler's
// coil-agnostic multi-coil path computes the maps the Python backend computes (tests/
// test_espirit_cpp.py compares them). Device-agnostic: runs where the k-space is (CPU or CUDA).
//
//   kldm::EspiritOptions o;                       // BART's defaults: kernel 6, region <= 24
//   auto [maps, evals] = kldm::espirit_maps(kspace, o);
//   // kspace: [B, C, H, W] complex64/complex128 (zeros where not acquired)
//   // maps:   [B, C, H, W] like kspace, sum_c |S_c|^2 = 1 on the support, 0 outside
//   // evals:  [B, 1, H, W] real, the top eigenvalue per pixel
//
// Errors (no calibration region, an all-zero region, bad options) throw kldm::Error, one line.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <utility>

#include "kldm/sampler.h"

namespace kldm {

struct EspiritOptions {
  int64_t kernel_h = 6, kernel_w = 6;  // ecalib -k (clamped to the region's extent minus 1)
  int64_t calib_h = 24, calib_w = 24;  // ecalib -r: the largest calibration region per dim
  double threshold = 0.001;            // ecalib -t: keep sigma_i^2 > threshold * sigma_0^2
  // ecalib -c: zero the maps where the eigenvalue is below (0.6; BART's default 0.8 cuts tissue
  // with narrow calibration regions, kspace_ldm/physics/espirit.py)
  double crop = 0.6;
  int64_t phase_ref = -1;  // -1: first principal component (BART), -2: none, c: coil
};

// (r0, r1, c0, c1): the centred fully sampled block of `sampled` [H, W] bool, each extent cut
// symmetrically around (H / 2, W / 2) to at most calib_h x calib_w; empty when the centre is not
// sampled (kspace_ldm.physics.espirit.calibration_region).
std::array<int64_t, 4> calibration_region(const at::Tensor& sampled, int64_t calib_h = 24,
                                          int64_t calib_w = 24);

std::pair<at::Tensor, at::Tensor> espirit_maps(const at::Tensor& kspace,
                                               const EspiritOptions& options = EspiritOptions());

// kspace_ldm.sampling.sense_dc.check_maps: throws kldm::Error("maps: ...") unless `maps` is
// complex [B|1, C, H, W] for `kspace` [B, C, H, W], finite and not all zero.
void check_maps(const at::Tensor& maps, const at::Tensor& kspace);

}  // namespace kldm
