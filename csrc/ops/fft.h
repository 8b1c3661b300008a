// SPDX-License-Identifier: MIT
// Internals of the centred-FFT and coil ops (fft2c, ifft2c, sense_forward, sense_adjoint, rss)
// shared by the CPU kernels (fft.cpp, sense.cpp) and the CUDA glue (cuda/fft_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>
#include <vector>

#include "fft_math.h"

namespace kldm::detail {

// fft2c / ifft2c: x is [..., H, W] complex64/complex128 with 2 to 2 + kMaxFftLeadingDims dims.
void check_fft2c_args(const at::Tensor& x, const char* op);

// sense_forward: image [B, 1, H, W] or [B, H, W], maps [B or 1, C, H, W], same complex dtype and
// device; mask (optional) as accepted by check_sense_mask.
void check_sense_forward_args(const at::Tensor& image, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask);

// sense_adjoint: kspace [B, C, H, W], maps [B or 1, C, H, W], same complex dtype and device.
void check_sense_adjoint_args(const at::Tensor& kspace, const at::Tensor& maps,
                              const std::optional<at::Tensor>& mask);

// rss: [..., C, H, W] (at least 3 dims) complex or real floating point.
void check_rss_args(const at::Tensor& x);

// Mask of the SENSE ops: bool or real, [W], [H, W] or 4-D [B|1, C|1, H|1, W|1] (3-D is refused, as
// in kspace_ldm.physics.coils: right-aligned broadcasting would pair its first dim with C), on the
// k-space's device. `shape` is the k-space shape [B, C, H, W].
void check_sense_mask(const at::Tensor& mask, at::IntArrayRef shape, const at::Device& device,
                      const char* op);

// The mask as the kernels read it: bool kept, other dtypes converted to `real` (the data's real
// type); returned as a 4-D view, with its broadcast strides over `shape` written into L.
at::Tensor sense_mask(const at::Tensor& mask, at::IntArrayRef shape, at::ScalarType real,
                      ModulateLayout& L);

// Contiguous [B, C, H, W] maps and the stride of their batch dim (0 when shared by the batch).
// Modulation layouts of the centred FFT ops (host side, shared by the CPU and CUDA paths).
// x: contiguous [..., H, W] -> B = product of leading dims, C = 1.
ModulateLayout fft2c_layout(const at::Tensor& x);
// sense_forward: image [B, 1, H, W] (or [B, H, W]) times maps [B|1, C, H, W] (batch stride
// maps_sb).
ModulateLayout sense_forward_layout(const at::Tensor& image, const at::Tensor& maps,
                                    int64_t maps_sb);
// sense_adjoint pre-modulation: contiguous kspace [B, C, H, W].
ModulateLayout sense_adjoint_layout(const at::Tensor& kspace);

at::Tensor sense_maps(const at::Tensor& maps, int64_t& batch_stride);

// Phase tables of a transform over [H, W] (see math::phase_table_entry), computed on the host:
// 4 (H + W) values of dtype `real`.
at::Tensor phase_tables_cpu(int64_t H, int64_t W, bool inverse, at::ScalarType real);

// The buffer the FFT reads (filled by the pre pass), contiguous [sizes]. On the CPU, buffers up to
// kMaxCachedFftBufferBytes reuse memory kept per thread between calls: a fresh 15 MB buffer per
// call made glibc return and re-fault the pages (~2,500 page faults, ~3 ms per call at
// [8, 1, 640, 368] complex64, a quarter of the FFT's time). Elsewhere a plain at::empty.
constexpr int64_t kMaxCachedFftBufferBytes = int64_t{64} << 20;
at::Tensor fft_input_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// The orthonormal 2-D c2c FFT of the last two dims of `buf` (ATen: MKL/pocketfft on CPU, cuFFT on
// CUDA); returns a new contiguous tensor that does not alias buf.
at::Tensor fft2_ortho(const at::Tensor& buf, bool inverse);

// CPU modulation pass over L (see ModulateLayout): out = in (* maps) (* mask) * phase, with the
// pre (post == false) or post phases of `tables`. in: contiguous (h, w) lines at L's strides;
// maps: contiguous [B or 1, C, H, W] or null; mask: from sense_mask or null; out: contiguous
// [B, C, H, W], may be `in` itself.
void modulate_cpu(const at::Tensor& in, const at::Tensor* maps, const at::Tensor* mask,
                  const at::Tensor& tables, bool post, const ModulateLayout& L, at::Tensor& out);

// rss: output shape (the coil dim -3 removed) and the [B, C, H, W] view of a contiguous input.
std::vector<int64_t> rss_shape(const at::Tensor& x);
CoilLayout rss_layout(const at::Tensor& x);

}  // namespace kldm::detail
