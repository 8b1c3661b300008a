// SPDX-License-Identifier: MIT
// ESPIRiT maps in libtorch (kldm/espirit.h): kspace_ldm.physics.espirit step for step -- the same
// tensor ops in the same order (calibration matrix by unfold, SVD, the kernel of the k-space
// projection by index_add, its image-domain C x C matrices by two einsums with the centred DFT
// rows, one batched eigh per row chunk, phase to the first principal component), so the maps
// agree with the Python module to float32 rounding (tests/test_espirit_cpp.py).
#include "kldm/espirit.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

namespace kldm {

namespace {

// Pixels per batched eigh call, as the Python module's _CHUNK: bounds the [n, C, C] working set.
constexpr int64_t kChunk = 16384;

// [lo, hi) of the run of true around `centre` in the 1-D bool `flags` (host vector).
std::pair<int64_t, int64_t> centre_run(const std::vector<bool>& flags, int64_t centre) {
  if (!flags[centre]) return {centre, centre};
  int64_t hi = centre, lo = centre;
  while (hi < static_cast<int64_t>(flags.size()) && flags[hi]) ++hi;
  while (lo > 0 && flags[lo - 1]) --lo;
  return {lo, hi};
}

std::vector<bool> host_flags(const at::Tensor& b) {
  auto c = b.to(at::kCPU).to(at::kBool).contiguous();
  const bool* p = c.data_ptr<bool>();
  return std::vector<bool>(p, p + c.numel());
}

// Kernel h [C, C, 2kh-1, 2kw-1] of the k-space operator W from the signal-space rows vh [n, N].
at::Tensor conv_kernel(const at::Tensor& vh, int64_t C, int64_t kh, int64_t kw) {
  auto P = at::matmul(vh.transpose(0, 1), vh.conj());  // [N, N], N = C*kh*kw
  P = P.reshape({C, kh, kw, C, kh, kw}).permute({0, 3, 1, 2, 4, 5});
  auto lo = at::TensorOptions().dtype(at::kLong).device(vh.device());
  auto dh = at::arange(kh, lo), dw = at::arange(kw, lo);
  auto ih =
      (dh.reshape({kh, 1, 1, 1}) - dh.reshape({1, 1, kh, 1}) + (kh - 1)).expand({kh, kw, kh, kw});
  auto iw =
      (dw.reshape({1, kw, 1, 1}) - dw.reshape({1, 1, 1, kw}) + (kw - 1)).expand({kh, kw, kh, kw});
  auto idx = (ih * (2 * kw - 1) + iw).reshape({-1});
  auto h = at::zeros({C, C, (2 * kh - 1) * (2 * kw - 1)}, vh.options());
  h.index_add_(2, idx, P.reshape({C, C, -1}));
  return h.reshape({C, C, 2 * kh - 1, 2 * kw - 1}) / (kh * kw);
}

// E[i, j] = exp(+2 pi i (j - (taps-1)/2) x_i / n), x_i = i - n // 2; float64 phase.
at::Tensor dft_rows(int64_t n, int64_t taps, at::ScalarType dtype, c10::Device device) {
  auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  auto x = at::arange(n, f64) - static_cast<double>(n / 2);
  auto delta = at::arange(taps, f64) - static_cast<double>((taps - 1) / 2);
  auto ph = 2 * M_PI * x.unsqueeze(1) * delta.unsqueeze(0) / static_cast<double>(n);
  return at::polar(at::ones_like(ph), ph).to(dtype);
}

std::pair<at::Tensor, at::Tensor> espirit_one(const at::Tensor& calib, int64_t H, int64_t W,
                                              int64_t kh, int64_t kw, const EspiritOptions& o) {
  const int64_t C = calib.size(0);
  auto A =
      calib.unfold(1, kh, 1).unfold(2, kw, 1).permute({1, 2, 0, 3, 4}).reshape({-1, C * kh * kw});
  auto svd = at::linalg_svd(A, /*full_matrices=*/false);
  const auto& sv = std::get<1>(svd);
  const auto& vh = std::get<2>(svd);
  int64_t n = 0;
  if (sv[0].gt(0).item<bool>()) n = sv.gt(std::sqrt(o.threshold) * sv[0]).sum().item<int64_t>();
  if (n == 0) throw Error("the calibration region is all zero");
  auto h = conv_kernel(vh.narrow(0, 0, n), C, kh, kw);                     // [C, C, 2kh-1, 2kw-1]
  auto Eh = dft_rows(H, 2 * kh - 1, calib.scalar_type(), calib.device());  // [H, taps_h]
  auto Ew = dft_rows(W, 2 * kw - 1, calib.scalar_type(), calib.device());  // [W, taps_w]
  auto T = at::einsum("abij,wj->wabi", {h, Ew});                           // [W, C, C, taps_h]

  at::Tensor ref;
  if (o.phase_ref == -1) {  // first principal component across coils of the calibration data
    auto flat = calib.reshape({C, -1});
    auto eig = at::linalg_eigh(at::matmul(flat, flat.conj().t()));
    ref = std::get<1>(eig).select(1, C - 1);
  } else if (o.phase_ref >= 0) {
    ref = at::zeros({C}, calib.options());
    ref[o.phase_ref] = 1;
  }

  auto maps = at::empty({H * W, C}, calib.options());
  auto lam = at::empty({H * W}, calib.options().dtype(c10::toRealValueType(calib.scalar_type())));
  const int64_t rows = std::max<int64_t>(1, kChunk / W);
  for (int64_t r = 0; r < H; r += rows) {  // row chunks bound memory; one batched eigh each
    const int64_t nr = std::min(rows, H - r);
    auto G = at::einsum("wabi,ri->rwab", {T, Eh.narrow(0, r, nr)}).reshape({-1, C, C});
    G = 0.5 * (G + G.conj().transpose(-1, -2));  // exactly Hermitian for eigh
    auto eig = at::linalg_eigh(G);
    auto s = std::get<1>(eig).select(-1, C - 1);
    auto lam_c = std::get<0>(eig).select(-1, C - 1);
    if (ref.defined()) {
      auto proj = at::matmul(s, ref.conj());  // [n]
      s = s * at::sgn(proj).conj().unsqueeze(1);
    }
    maps.narrow(0, r * W, nr * W).copy_(s);
    lam.narrow(0, r * W, nr * W).copy_(lam_c);
  }
  auto out = maps.t().reshape({C, H, W});
  auto ev = lam.reshape({H, W});
  if (o.crop > 0) out = out * ev.ge(o.crop);
  return {out, ev};
}

}  // namespace

std::array<int64_t, 4> calibration_region(const at::Tensor& sampled, int64_t calib_h,
                                          int64_t calib_w) {
  const int64_t H = sampled.size(0), W = sampled.size(1);
  const int64_t ch = H / 2, cw = W / 2;
  int64_t r0, r1, c0, c1;
  std::tie(c0, c1) = centre_run(host_flags(sampled[ch]), cw);
  auto rows_all = c1 > c0 ? sampled.narrow(1, c0, c1 - c0).all(1) : sampled.select(1, cw);
  std::tie(r0, r1) = centre_run(host_flags(rows_all), ch);
  if (r1 > r0)  // rows limit columns too (2-D masks): keep the columns sampled in every row
    std::tie(c0, c1) = centre_run(host_flags(sampled.narrow(0, r0, r1 - r0).all(0)), cw);
  r0 = std::max(r0, ch - calib_h / 2);
  r1 = std::min(r1, ch - calib_h / 2 + calib_h);
  c0 = std::max(c0, cw - calib_w / 2);
  c1 = std::min(c1, cw - calib_w / 2 + calib_w);
  return {r0, r1, c0, c1};
}

std::pair<at::Tensor, at::Tensor> espirit_maps(const at::Tensor& kspace, const EspiritOptions& o) {
  if (!kspace.defined() || !kspace.is_complex() || kspace.dim() != 4)
    throw Error("espirit: k-space must be complex [B, C, H, W]");
  if (!(o.threshold >= 0 && o.threshold < 1 && o.crop >= 0 && o.crop < 1 && o.kernel_h >= 1 &&
        o.kernel_w >= 1 && o.calib_h >= 1 && o.calib_w >= 1))
    throw Error("espirit: need kernel >= 1, calib_size >= 1, 0 <= threshold < 1, 0 <= crop < 1");
  const int64_t B = kspace.size(0), C = kspace.size(1), H = kspace.size(2), W = kspace.size(3);
  if (o.phase_ref < -2 || o.phase_ref >= C)
    throw Error("espirit: phase_ref must be -1 (pca), -2 (none) or a coil index < " +
                std::to_string(C));
  auto sampled = kspace.ne(0).any(1);  // [B, H, W]
  auto maps = at::zeros_like(kspace);
  auto evals =
      at::zeros({B, 1, H, W}, kspace.options().dtype(c10::toRealValueType(kspace.scalar_type())));
  for (int64_t b = 0; b < B; ++b) {  // per slice: calibration regions can differ
    auto [r0, r1, c0, c1] = calibration_region(sampled[b], o.calib_h, o.calib_w);
    if (r1 - r0 < 2 || c1 - c0 < 2)
      throw Error("no calibration region: the fully sampled k-space centre of sample " +
                  std::to_string(b) + " is " + std::to_string(r1 - r0) + "x" +
                  std::to_string(c1 - c0) + " (need at least 2x2; use a mask with ACS lines)");
    auto calib = kspace[b].narrow(1, r0, r1 - r0).narrow(2, c0, c1 - c0);
    // At least 2 patch positions per dim (the Python module explains why).
    const int64_t kh = std::max<int64_t>(1, std::min(o.kernel_h, r1 - r0 - 1));
    const int64_t kw = std::max<int64_t>(1, std::min(o.kernel_w, c1 - c0 - 1));
    auto [m, ev] = espirit_one(calib, H, W, kh, kw, o);
    maps[b].copy_(m);
    evals[b][0].copy_(ev);
  }
  return {maps, evals};
}

void check_maps(const at::Tensor& maps, const at::Tensor& kspace) {
  if (!maps.defined() || !maps.is_complex() || maps.dim() != 4)
    throw Error("maps: coil maps must be complex [B, C, H, W], got " +
                (maps.defined() ? std::string(c10::str(maps.sizes())) + " " +
                                      std::string(c10::toString(maps.scalar_type()))
                                : std::string("none")));
  if (maps.size(1) != kspace.size(1))
    throw Error("maps: " + std::to_string(maps.size(1)) + " coil maps for k-space with " +
                std::to_string(kspace.size(1)) + " coils");
  if (maps.size(2) != kspace.size(2) || maps.size(3) != kspace.size(3) ||
      (maps.size(0) != 1 && maps.size(0) != kspace.size(0)))
    throw Error("maps: map shape " + std::string(c10::str(maps.sizes())) +
                " does not match k-space " + std::string(c10::str(kspace.sizes())));
  if (!at::isfinite(at::view_as_real(maps)).all().item<bool>())
    throw Error("maps: coil maps contain NaN or Inf");
  if (!maps.ne(0).any().item<bool>()) throw Error("maps: coil maps are all zero (no support)");
}

}  // namespace kldm
