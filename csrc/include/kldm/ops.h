// SPDX-License-Identifier: MIT
// Public C++ API of the kldm k-space ops. Every function goes through the PyTorch dispatcher
// (torch::ops kldm::*), so it runs the CPU or CUDA kernel that matches the inputs' device.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace kldm {

// Masked data consistency on complex k-space.
//   pred, measured: [..., H, W] complex64/complex128, same shape, same device
//   mask:           broadcastable to pred ([W] column mask, [H, W], [B, 1, 1, W], ...), bool or real
//   weight:         in [0, 1]; a = weight * mask
//   returns         (1 - a) * pred + a * measured, with exact copies where a == 0 or a == 1
//                   (weight 1 and a binary mask: hard replacement, measured lines kept bit for bit).
at::Tensor dc_project(const at::Tensor& pred, const at::Tensor& measured, const at::Tensor& mask,
                      double weight = 1.0);

struct BuildInfo {
  std::string version;        // kspace-ldm version
  std::string torch_version;  // torch the library was compiled against
  bool cuda = false;          // CUDA kernels compiled in
  std::string cuda_archs;     // e.g. "80;90" (CMake syntax)
  std::string compiler;
  std::string build_date;
};

BuildInfo build_info();

// Names of every op registered under the kldm namespace (also forces the library to be linked by
// consumers that would otherwise only rely on static registration).
std::vector<std::string> registered_ops();

}  // namespace kldm
