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

// Guidance residual and its squared norm, in one pass.
//   pred, measured: [..., H, W] complex64/complex128, same shape, same device
//   mask:           broadcastable to pred (same forms as dc_project), bool or real
//   returns         (r, sq_norm): r = mask * (pred - measured), [..., H, W] of pred's dtype;
//                   sq_norm = sum |r|^2 over every dim but the first, real dtype, shape [B]
//                   ([] for a 2-D input), accumulated in double (deterministic).
std::tuple<at::Tensor, at::Tensor> dc_residual(const at::Tensor& pred, const at::Tensor& measured,
                                               const at::Tensor& mask);

// Complex k-space to standardised real channels.
//   kspace:    [B, C, H, W] complex64/complex128
//   mean, std: both or neither; real of kspace's real dtype, broadcastable to [B, 2C, 1, 1]
//   returns    (x, mean, std): x [B, 2C, H, W] real, channels [re0, im0, re1, im1, ...],
//              x = (channel - mean) / std; mean, std [B, 2C, 1, 1]. Computed statistics are per
//              sample and channel over H*W (std unbiased); std <= eps is replaced by 1 (a constant
//              channel is centred, not scaled), and the std returned is the divisor used.
std::tuple<at::Tensor, at::Tensor, at::Tensor> kspace_normalize(
    const at::Tensor& kspace, const std::optional<at::Tensor>& mean = std::nullopt,
    const std::optional<at::Tensor>& stddev = std::nullopt, double eps = 1e-12);

// Inverse of kspace_normalize: x [B, 2C, H, W] float32/float64, mean/std broadcastable to
// [B, 2C, 1, 1] of x's dtype -> (x * std + mean) as [B, C, H, W] complex.
at::Tensor kspace_denormalize(const at::Tensor& x, const at::Tensor& mean,
                              const at::Tensor& stddev);

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
