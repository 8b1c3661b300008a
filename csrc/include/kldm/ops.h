// SPDX-License-Identifier: MIT
// Public C++ API of the kldm k-space ops. Every function goes through the PyTorch dispatcher
// (torch::ops kldm::*), so it runs the CPU or CUDA kernel that matches the inputs' device.
//
// Autograd: dc_project, dc_residual, kspace_normalize, kspace_denormalize, fft2c, ifft2c,
// sense_forward, sense_adjoint and rss are differentiable from Python only: their backward
// formulas (and fake kernels) are registered by kspace_ldm.ops._meta, which the dispatcher imports
// when Python first needs them. From C++ without Python they have no autograd kernel (a tensor that
// requires grad gets no grad_fn); the C++ sampler needs none (its guidance applies dc_residual's
// formula by hand and differentiates the decoder with the exported VJP package). ddpm_step and
// ddim_step are not differentiable anywhere.
//
// Where each op runs in the pipeline (Python: kspace_ldm.*, C++: csrc/sampler):
//   dc_project           sampling/cgs.py, sense_dc.py; Sampler (every consistency step)
//   ddpm_step            sampling/schedulers.py FusedDDPMScheduler (cgs-ref); Sampler cgs-ref
//   ddim_step            sampling/cgs.py _ddim_update (cgs); Sampler cgs; FusedDDIMScheduler
//   dc_residual          the guidance loss (cgs, cgs-ref); Sampler residual_grad
//   kspace_(de)normalize models/kspace_norm.py KspaceNormalizer, latents.normalize_with;
//                        sampler/normalizer.cpp
//   fft2c, ifft2c        sense_dc.py, cs.py, KspaceNormalizer.to_image (training's image losses);
//                        Sampler (the output image)
//   sense_forward/adjoint sense_dc.py, cs.py
//   rss                  KspaceNormalizer.to_image; Sampler (the output image)
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace kldm {

// Masked data consistency on complex k-space.
//   pred, measured: [..., H, W] complex64/complex128, same shape, same device
//   mask:           broadcastable to pred ([W] column mask, [H, W], [B, 1, 1, W], ...), bool or
//   real weight:         in [0, 1]; a = weight * mask returns         (1 - a) * pred + a *
//   measured, with exact copies where a == 0 or a == 1
//                   (weight 1 and a binary mask: hard replacement, measured lines kept bit for
//                   bit).
at::Tensor dc_project(const at::Tensor& pred, const at::Tensor& measured, const at::Tensor& mask,
                      double weight = 1.0);

// Fused diffusion sampling steps: the element-wise part of diffusers' DDPMScheduler.step and
// DDIMScheduler.step in one kernel. The caller computes the per-step coefficients on the host from
// the scheduler's float32 alphas_cumprod, rounding each operation to float32 as diffusers' 0-dim
// float32 tensors do (kspace_ldm.sampling.schedulers does exactly this); with a_t =
// alphas_cumprod[t], a_p = alphas_cumprod[prev_t] (or 1 / final_alpha_cumprod past the start), all
// in float32:
//   sqrt_alpha_prod_t = sqrt(a_t), sqrt_beta_prod_t = sqrt(1 - a_t).
//
//   model_output, sample: same shape (any), float32/float64/bfloat16, same dtype and device
//   noise:     like sample, or empty (no noise term; then noise_std must be 0)
//   prediction_type: "epsilon" | "sample" | "v_prediction"
//   clip_sample, clip_sample_range: clamp the predicted x0 to [-range, range]
//   threshold: empty, or [B] (B = sample.size(0)) per-sample dynamic-thresholding limits s_b >= 1:
//              x0 = clamp(x0, -s_b, s_b) / s_b (exclusive with clip_sample)
//   returns (prev_sample, pred_original_sample), contiguous, sample's dtype. float32/float64 are
//   computed in their own type, op for op as diffusers; bfloat16 in float32, rounded once.
//
// DDPM (Ho et al. eq. 7): prev = c0 * x0 + cs * sample + noise_std * noise, with
//   pred_original_sample_coeff c0 = sqrt(a_p) * (1 - a_t / a_p) / (1 - a_t),
//   current_sample_coeff       cs = sqrt(a_t / a_p) * (1 - a_p) / (1 - a_t),
//   noise_std = sqrt(variance) (fixed_small, variance = max((1-a_p)/(1-a_t) * beta_t, 1e-20)),
//               sqrt(beta_t) (fixed_large), exp(0.5 log variance) (fixed_small_log); 0 at t == 0.
std::tuple<at::Tensor, at::Tensor> ddpm_step(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double pred_original_sample_coeff, double current_sample_coeff, double noise_std,
    const std::string& prediction_type = "epsilon", bool clip_sample = false,
    double clip_sample_range = 1.0, const std::optional<at::Tensor>& threshold = std::nullopt);

// DDIM (Song et al. eq. 12): prev = sqrt(a_p) * x0 + direction_coeff * eps + noise_std * noise,
// with
//   noise_std = eta * sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)),
//   direction_coeff = sqrt(1 - a_p - noise_std^2);
//   use_clipped_model_output: eps re-derived from the clipped x0.
std::tuple<at::Tensor, at::Tensor> ddim_step(
    const at::Tensor& model_output, const at::Tensor& sample,
    const std::optional<at::Tensor>& noise, double sqrt_alpha_prod_t, double sqrt_beta_prod_t,
    double sqrt_alpha_prod_t_prev, double direction_coeff, double noise_std,
    const std::string& prediction_type = "epsilon", bool clip_sample = false,
    double clip_sample_range = 1.0, bool use_clipped_model_output = false,
    const std::optional<at::Tensor>& threshold = std::nullopt);
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
