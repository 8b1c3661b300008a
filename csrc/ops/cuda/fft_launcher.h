// SPDX-License-Identifier: MIT
// Plain launchers of the centred-FFT and coil kernels (fft_kernel.cu; no torch types), called by
// the glue in fft_cuda.cpp. Complex data are interleaved (re, im) pairs of the real type; layouts
// and formulas are in ../fft_math.h. Every launcher enqueues on `stream` and returns
// cudaGetLastError().
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../fft_math.h"

namespace kldm::cuda {

// table[0 .. 4 (H + W)): the pre and post phase tables of a transform over [H, W]
// (math::phase_table_entry); `inverse` for ifft2c.
cudaError_t launch_centring_tables(float* table, int64_t H, int64_t W, bool inverse,
                                   cudaStream_t stream);
cudaError_t launch_centring_tables(double* table, int64_t H, int64_t W, bool inverse,
                                   cudaStream_t stream);

// out = in (* maps) (* mask) * phase over the [B, C, H, W] layout L; maps and mask may be null;
// in and out may alias. tab_h / tab_w: the H and W halves of the pre or post table.
cudaError_t launch_modulate(const float* in, const float* maps, const bool* mask,
                            const float* tab_h, const float* tab_w, float* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream);
cudaError_t launch_modulate(const float* in, const float* maps, const float* mask,
                            const float* tab_h, const float* tab_w, float* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream);
cudaError_t launch_modulate(const double* in, const double* maps, const bool* mask,
                            const double* tab_h, const double* tab_w, double* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream);
cudaError_t launch_modulate(const double* in, const double* maps, const double* mask,
                            const double* tab_h, const double* tab_w, double* out,
                            const ModulateLayout& L, int num_sms, cudaStream_t stream);

// out[b, h, w] = phase(h, w) * sum_c conj(maps[b, c, h, w]) * z[b, c, h, w] (post phases).
cudaError_t launch_coil_combine(const float* z, const float* maps, const float* tab_h,
                                const float* tab_w, float* out, const CoilLayout& L, int num_sms,
                                cudaStream_t stream);
cudaError_t launch_coil_combine(const double* z, const double* maps, const double* tab_h,
                                const double* tab_w, double* out, const CoilLayout& L, int num_sms,
                                cudaStream_t stream);

// out[b, h, w] = sqrt(sum_c |x[b, c, h, w]|^2); x complex (interleaved) when `complex_input`.
cudaError_t launch_rss(const float* x, bool complex_input, float* out, const CoilLayout& L,
                       int num_sms, cudaStream_t stream);
cudaError_t launch_rss(const double* x, bool complex_input, double* out, const CoilLayout& L,
                       int num_sms, cudaStream_t stream);

}  // namespace kldm::cuda
