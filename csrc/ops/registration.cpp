// SPDX-License-Identifier: MIT
// The one place where every kldm op schema is defined. Kernels register per backend in their own
// files (TORCH_LIBRARY_IMPL); fake (meta) kernels and autograd formulas live in Python, in
// kspace_ldm.ops._meta, which torch imports when it first needs them (set_python_module).
#include <torch/library.h>

TORCH_LIBRARY(kldm, m) {
  m.set_python_module("kspace_ldm.ops._meta");
  // pred, measured: [..., H, W] complex; mask broadcastable to pred; out = (1-a) pred + a measured,
  // a = weight * mask.
  m.def("dc_project(Tensor pred, Tensor measured, Tensor mask, float weight=1.0) -> Tensor");
  // Fused diffusion sampling steps (diffusers' DDPMScheduler.step / DDIMScheduler.step,
  // element-wise part; the per-step float coefficients are computed on the host, see kldm/ops.h).
  // model_output, sample, noise: same shape, float32/float64/bfloat16; threshold: [B] per-sample
  // dynamic threshold s_b. Not differentiable (sampling only).
  m.def(
      "ddpm_step(Tensor model_output, Tensor sample, Tensor? noise, float sqrt_alpha_prod_t, "
      "float sqrt_beta_prod_t, float pred_original_sample_coeff, float current_sample_coeff, "
      "float noise_std, str prediction_type=\"epsilon\", bool clip_sample=False, "
      "float clip_sample_range=1.0, Tensor? threshold=None) "
      "-> (Tensor prev_sample, Tensor pred_original_sample)");
  m.def(
      "ddim_step(Tensor model_output, Tensor sample, Tensor? noise, float sqrt_alpha_prod_t, "
      "float sqrt_beta_prod_t, float sqrt_alpha_prod_t_prev, float direction_coeff, "
      "float noise_std, str prediction_type=\"epsilon\", bool clip_sample=False, "
      "float clip_sample_range=1.0, bool use_clipped_model_output=False, Tensor? threshold=None) "
      "-> (Tensor prev_sample, Tensor pred_original_sample)");
  // pred, measured: [..., H, W] complex; mask as dc_project. Returns (r, sq_norm):
  // r = mask * (pred - measured), sq_norm = sum |r|^2 over every dim but the first ([B]; [] for
  // 2-D).
  m.def("dc_residual(Tensor pred, Tensor measured, Tensor mask) -> (Tensor, Tensor)");
  // kspace: [B, C, H, W] complex -> (x [B, 2C, H, W] real, channels [re0, im0, re1, ...], each
  // standardised per sample; mean, std [B, 2C, 1, 1]). Given mean/std are used instead of computed.
  m.def(
      "kspace_normalize(Tensor kspace, Tensor? mean=None, Tensor? std=None, float eps=1e-12) -> "
      "(Tensor, Tensor, Tensor)");
  // Inverse of kspace_normalize: x [B, 2C, H, W] real -> x * std + mean as [B, C, H, W] complex.
  m.def("kspace_denormalize(Tensor x, Tensor mean, Tensor std) -> Tensor");
  // Centred orthonormal 2-D FFTs over the last two dims of [..., H, W] complex (fftshift(fft2(
  // ifftshift(x))) and its inverse), centring applied as phase modulations (docs/fft_centering.md).
  m.def("fft2c(Tensor x) -> Tensor");
  m.def("ifft2c(Tensor x) -> Tensor");
  // SENSE pair: image [B, 1, H, W] or [B, H, W], maps [B|1, C, H, W], mask ([W], [H, W] or 4-D,
  // bool or real) -> mask * fft2c(maps * image) [B, C, H, W], and its adjoint
  // sum_c conj(maps_c) * ifft2c(mask * kspace_c) [B, 1, H, W].
  m.def("sense_forward(Tensor image, Tensor maps, Tensor? mask=None) -> Tensor");
  m.def("sense_adjoint(Tensor kspace, Tensor maps, Tensor? mask=None) -> Tensor");
  // Root-sum-of-squares over the coil dim -3: [..., C, H, W] real or complex -> [..., H, W] real.
  m.def("rss(Tensor coil_images) -> Tensor");
}
