// SPDX-License-Identifier: MIT
// Internals of the centred-FFT and coil ops (fft2c, ifft2c, sense_forward, sense_adjoint, rss)
// shared by the CPU kernels (fft.cpp, sense.cpp) and the CUDA glue (cuda/fft_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/complex.h>

#include <optional>
#include <vector>

#include "fft_math.h"

namespace kldm::detail {

// The complex dtypes the FFT and SENSE ops accept.
inline bool is_complex64_or_128(const at::Tensor& t) {
  return t.scalar_type() == at::kComplexFloat || t.scalar_type() == at::kComplexDouble;
}

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

// Modulation layouts of the centred FFT ops (host side, shared by the CPU and CUDA paths).
// x: contiguous [..., H, W] -> B = product of leading dims, C = 1.
ModulateLayout fft2c_layout(const at::Tensor& x);
// sense_forward: image [B, 1, H, W] (or [B, H, W]) times maps [B|1, C, H, W] (batch stride
// maps_sb).
ModulateLayout sense_forward_layout(const at::Tensor& image, const at::Tensor& maps,
                                    int64_t maps_sb);
// sense_adjoint pre-modulation: contiguous kspace [B, C, H, W].
ModulateLayout sense_adjoint_layout(const at::Tensor& kspace);

// Contiguous [B, C, H, W] maps and the stride of their batch dim (0 when shared by the batch).
at::Tensor sense_maps(const at::Tensor& maps, int64_t& batch_stride);

// Phase tables [pre_H, pre_W, post_H, post_W] of a transform over [H, W] (see
// math::phase_table_entry), computed on the host: 4 (H + W) values of like's real dtype.
at::Tensor phase_tables_cpu(int64_t H, int64_t W, bool inverse, const at::Tensor& like);

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

// The raw operands of a modulation pass (modulate_cpu and its CUDA twin) in the real type T: the
// (h, w) phase tables of the pre (post == false) or post pass, and the data as interleaved
// (re, im) pairs (maps null when absent).
template <typename T>
struct ModulateOperands {
  const T* tab_h;
  const T* tab_w;
  const T* in;
  const T* maps;
  T* out;
};
template <typename T>
ModulateOperands<T> modulate_operands(const at::Tensor& in, const at::Tensor* maps,
                                      const at::Tensor& tables, bool post, const ModulateLayout& L,
                                      at::Tensor& out) {
  using C = c10::complex<T>;
  ModulateOperands<T> o;
  o.tab_h = tables.const_data_ptr<T>() + (post ? 2 * (L.H + L.W) : 0);
  o.tab_w = o.tab_h + 2 * L.H;
  o.in = reinterpret_cast<const T*>(in.const_data_ptr<C>());
  o.maps = maps != nullptr ? reinterpret_cast<const T*>(maps->const_data_ptr<C>()) : nullptr;
  o.out = reinterpret_cast<T*>(out.mutable_data_ptr<C>());
  return o;
}

// CPU coil combination of sense_adjoint: out[b, 0, h, w] = post phase(h, w) * sum_c
// conj(maps[b, c, h, w]) * z[b, c, h, w]. z: contiguous [B, C, H, W]; maps: from sense_maps;
// tables: of the inverse transform; out: contiguous [B, 1, H, W].
void coil_combine_cpu(const at::Tensor& z, const at::Tensor& maps, const at::Tensor& tables,
                      const CoilLayout& L, at::Tensor& out);

// The device's passes of the centred FFT and SENSE ops; run_centred_fft, run_sense_forward and
// run_sense_adjoint chain them around the FFT the same way on either device.
struct FftPasses {
  at::Tensor (*phase_tables)(int64_t H, int64_t W, bool inverse, const at::Tensor& like);
  void (*modulate)(const at::Tensor& in, const at::Tensor* maps, const at::Tensor* mask,
                   const at::Tensor& tables, bool post, const ModulateLayout& L, at::Tensor& out);
  void (*coil_combine)(const at::Tensor& z, const at::Tensor& maps, const at::Tensor& tables,
                       const CoilLayout& L, at::Tensor& out);
};
inline constexpr FftPasses kCpuFftPasses{&phase_tables_cpu, &modulate_cpu, &coil_combine_cpu};

// The ops after their check_*_args (on CUDA under the device guard), with the passes of `dev`.
at::Tensor run_centred_fft(const at::Tensor& x, bool inverse, const FftPasses& dev);
at::Tensor run_sense_forward(const at::Tensor& image, const at::Tensor& maps,
                             const std::optional<at::Tensor>& mask, const FftPasses& dev);
at::Tensor run_sense_adjoint(const at::Tensor& kspace, const at::Tensor& maps,
                             const std::optional<at::Tensor>& mask, const FftPasses& dev);

// rss: output shape (the coil dim -3 removed) and the [B, C, H, W] view of a contiguous input.
std::vector<int64_t> rss_shape(const at::Tensor& x);
CoilLayout rss_layout(const at::Tensor& x);

}  // namespace kldm::detail
