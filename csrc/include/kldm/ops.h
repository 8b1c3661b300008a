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

// Centred orthonormal 2-D FFT over the last two dims: fftshift(fft2(ifftshift(x), norm="ortho")).
//   x:       [..., H, W] complex64/complex128 (2 to 10 dims), any size (odd or even)
//   returns  [..., H, W] contiguous, same dtype; DC at (H / 2, W / 2). Unitary.
at::Tensor fft2c(const at::Tensor& x);
// Inverse of fft2c: fftshift(ifft2(ifftshift(x), norm="ortho")); same shapes and dtypes.
at::Tensor ifft2c(const at::Tensor& x);

// SENSE forward operator: mask * fft2c(maps * image).
//   image:   [B, 1, H, W] or [B, H, W] complex64/complex128
//   maps:    [B, C, H, W] or [1, C, H, W] (shared by the batch), image's dtype and device
//   mask:    optional, bool or real: [W], [H, W] or 4-D [B|1, C|1, H|1, W|1]
//   returns  [B, C, H, W] k-space
at::Tensor sense_forward(const at::Tensor& image, const at::Tensor& maps,
                         const std::optional<at::Tensor>& mask = std::nullopt);
// Adjoint of sense_forward: sum_c conj(maps_c) * ifft2c(mask * kspace_c).
//   kspace:  [B, C, H, W] complex; maps and mask as for sense_forward
//   returns  [B, 1, H, W] image
at::Tensor sense_adjoint(const at::Tensor& kspace, const at::Tensor& maps,
                         const std::optional<at::Tensor>& mask = std::nullopt);

// Root-sum-of-squares over the coil dim: sqrt(sum_c |x_c|^2).
//   coil_images: [..., C, H, W] complex64/complex128/float32/float64 (at least 3 dims)
//   returns      [..., H, W] real (float32 for complex64)
at::Tensor rss(const at::Tensor& coil_images);

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
