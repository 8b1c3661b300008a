// SPDX-License-Identifier: MIT
// kldm::kspace_normalize / kldm::kspace_denormalize: complex k-space <-> per-sample standardised
// real channels [re0, im0, re1, im1, ...] (argument checks and CPU kernels).
#include "kspace_normalize.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "dcnorm_simd.h"
#include "kldm/ops.h"

namespace kldm {
namespace detail {
namespace {

// A statistic must be a real tensor of `dtype` on `device` broadcastable to [B, 2C, 1, 1] (one
// value per sample and channel at most: statistics never vary over H, W).
void check_stat(const char* op, const char* name, const at::Tensor& stat, at::ScalarType dtype,
                const c10::Device& device, int64_t batch, int64_t channels2) {
  TORCH_CHECK_TYPE(stat.scalar_type() == dtype, op, ": ", name, " must be ", dtype,
                   " (the real dtype of the data), got ", stat.scalar_type());
  TORCH_CHECK_VALUE(stat.device() == device, op, ": ", name, " is on ", stat.device(),
                    " but the data is on ", device);
  const int64_t target[4] = {batch, channels2, 1, 1};
  bool ok = stat.dim() <= 4;
  for (int64_t i = 1; ok && i <= stat.dim(); ++i) {
    const int64_t s = stat.size(stat.dim() - i);
    ok = s == 1 || s == target[4 - i];
  }
  TORCH_CHECK_VALUE(ok, op, ": ", name, " shape ", stat.sizes(),
                    " does not broadcast to [B, 2C, 1, 1] = [", batch, ", ", channels2, ", 1, 1]");
}

}  // namespace

void check_kspace_normalize_args(const at::Tensor& kspace, const std::optional<at::Tensor>& mean,
                                 const std::optional<at::Tensor>& stddev, double eps) {
  TORCH_CHECK_TYPE(kspace.is_complex(),
                   "kspace_normalize: kspace must be complex64 or complex128, got ",
                   kspace.scalar_type());
  TORCH_CHECK_VALUE(kspace.dim() == 4, "kspace_normalize: kspace must be [B, C, H, W], got shape ",
                    kspace.sizes());
  TORCH_CHECK_VALUE(mean.has_value() == stddev.has_value(),
                    "kspace_normalize: mean and std must be given together (got ",
                    mean.has_value() ? "mean" : "std", " only)");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0,
                    "kspace_normalize: eps must be finite and >= 0, got ", eps);
  const auto real = c10::toRealValueType(kspace.scalar_type());
  if (mean.has_value()) {
    const int64_t B = kspace.size(0), C2 = 2 * kspace.size(1);
    check_stat("kspace_normalize", "mean", *mean, real, kspace.device(), B, C2);
    check_stat("kspace_normalize", "std", *stddev, real, kspace.device(), B, C2);
  } else {
    TORCH_CHECK_VALUE(kspace.size(2) * kspace.size(3) >= 2,
                      "kspace_normalize: computing an unbiased std needs H * W >= 2, got kspace "
                      "shape ",
                      kspace.sizes());
  }
}

void check_kspace_denormalize_args(const at::Tensor& x, const at::Tensor& mean,
                                   const at::Tensor& stddev) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "kspace_denormalize: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) % 2 == 0,
                    "kspace_denormalize: x must be [B, 2C, H, W] (even channel count), got shape ",
                    x.sizes());
  check_stat("kspace_denormalize", "mean", mean, x.scalar_type(), x.device(), x.size(0), x.size(1));
  check_stat("kspace_denormalize", "std", stddev, x.scalar_type(), x.device(), x.size(0),
             x.size(1));
}

namespace {

// A statistic given by the caller, broadcast and copied to a fresh contiguous [B, 2C, 1, 1] tensor
// (outputs must not alias inputs).
at::Tensor expand_stat(const at::Tensor& stat, int64_t batch, int64_t channels2) {
  at::Tensor out = at::empty({batch, channels2, 1, 1}, stat.options());
  out.copy_(stat.expand({batch, channels2, 1, 1}));
  return out;
}

NormalizeLayout normalize_layout(int64_t batch, int64_t coils, int64_t H, int64_t W) {
  NormalizeLayout L;
  L.planes = batch * coils;
  L.n = H * W;
  return L;
}

}  // namespace

KspaceNormalizeIO prepare_kspace_normalize(const at::Tensor& kspace,
                                           const std::optional<at::Tensor>& mean,
                                           const std::optional<at::Tensor>& stddev) {
  KspaceNormalizeIO io;
  io.kspace = kspace.contiguous();
  const int64_t B = kspace.size(0), C = kspace.size(1), H = kspace.size(2), W = kspace.size(3);
  const auto real_opts = kspace.options().dtype(c10::toRealValueType(kspace.scalar_type()));
  io.out = at::empty({B, 2 * C, H, W}, real_opts);
  io.given = mean.has_value();
  io.mean = io.given ? expand_stat(*mean, B, 2 * C) : at::empty({B, 2 * C, 1, 1}, real_opts);
  io.stddev = io.given ? expand_stat(*stddev, B, 2 * C) : at::empty({B, 2 * C, 1, 1}, real_opts);
  io.L = normalize_layout(B, C, H, W);
  return io;
}

KspaceDenormalizeIO prepare_kspace_denormalize(const at::Tensor& x, const at::Tensor& mean,
                                               const at::Tensor& stddev) {
  KspaceDenormalizeIO io;
  io.x = x.contiguous();
  const int64_t B = x.size(0), C2 = x.size(1), H = x.size(2), W = x.size(3);
  io.mean = expand_stat(mean, B, C2);
  io.stddev = expand_stat(stddev, B, C2);
  io.out = at::empty({B, C2 / 2, H, W}, x.options().dtype(c10::toComplexType(x.scalar_type())));
  io.L = normalize_layout(B, C2 / 2, H, W);
  return io;
}

}  // namespace detail

namespace {

// Planes are cut into chunks of kChunk complex samples. Each chunk's moments go to their own slot
// and a plane's chunks are merged in order, so the statistics depend on the shape only: the same
// bits for any thread count.
constexpr int64_t kChunk = 16384;

int64_t chunks_per_plane(const NormalizeLayout& L) { return (L.n + kChunk - 1) / kChunk; }

// Grain: two chunks (32k samples) per task at least, so small problems run on one thread.
constexpr int64_t kGrainChunks = 2;

// Shifted sums of `len` interleaved complex samples: (re, im) pairs in four independent
// accumulators (sample k goes to accumulator k % 4), eight add chains that keep the FP units busy;
// combined in a fixed order, so the result does not depend on SIMD or threads.
struct ShiftedSums {
  cpu::Pair s1;  // (sum (re - kr), sum (im - ki))
  cpu::Pair s2;  // (sum (re - kr)^2, sum (im - ki)^2)
};

template <typename T>
ShiftedSums shifted_sums(const T* __restrict__ zp, int64_t len, cpu::Pair shift) {
  cpu::Pair s1[4] = {cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair()};
  cpu::Pair s2[4] = {cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair(), cpu::zero_pair()};
  int64_t k = 0;
  for (; k + 3 < len; k += 4) {
    for (int j = 0; j < 4; ++j) {
      const cpu::Pair d = cpu::load_pair(zp + 2 * (k + j)) - shift;
      s1[j] += d;
      s2[j] += d * d;
    }
  }
  for (; k < len; ++k) {
    const cpu::Pair d = cpu::load_pair(zp + 2 * k) - shift;
    s1[0] += d;
    s2[0] += d * d;
  }
  return {(s1[0] + s1[1]) + (s1[2] + s1[3]), (s2[0] + s2[1]) + (s2[2] + s2[3])};
}

// Pass 1: per-plane mean and (effective) std of the real and imaginary parts.
template <typename T>
void normalize_stats_cpu(const T* z, const NormalizeLayout& L, T eps, T* mean, T* stddev) {
  const int64_t cpp = chunks_per_plane(L);
  const int64_t tasks = L.planes * cpp;
  std::vector<math::Moments> part(static_cast<size_t>(2 * tasks));
  at::parallel_for(0, tasks, kGrainChunks, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / cpp;
      const int64_t k0 = (t - p * cpp) * kChunk;
      const int64_t len = std::min(kChunk, L.n - k0);
      const T* zp = z + 2 * (p * L.n + k0);
      // Shifts: the chunk's first sample.
      const ShiftedSums sums = shifted_sums(zp, len, cpu::load_pair(zp));
      const auto cnt = static_cast<double>(len);
      part[static_cast<size_t>(2 * t)] =
          math::moments_from_shifted(cnt, zp[0], sums.s1[0], sums.s2[0]);
      part[static_cast<size_t>(2 * t + 1)] =
          math::moments_from_shifted(cnt, zp[1], sums.s1[1], sums.s2[1]);
    }
  });
  for (int64_t p = 0; p < L.planes; ++p) {
    math::Moments re, im;
    for (int64_t c = 0; c < cpp; ++c) {
      re = math::merge_moments(re, part[static_cast<size_t>(2 * (p * cpp + c))]);
      im = math::merge_moments(im, part[static_cast<size_t>(2 * (p * cpp + c) + 1)]);
    }
    mean[2 * p] = static_cast<T>(re.mean);
    mean[2 * p + 1] = static_cast<T>(im.mean);
    stddev[2 * p] = math::effective_std(static_cast<T>(math::unbiased_std(re)), eps);
    stddev[2 * p + 1] = math::effective_std(static_cast<T>(math::unbiased_std(im)), eps);
  }
}

// Pass 2: out[2p] = (re - mean[2p]) / std[2p], out[2p + 1] likewise for the imaginary part.
template <typename T>
void normalize_write_cpu(const T* z, const T* mean, const T* stddev, T* out,
                         const NormalizeLayout& L) {
  const int64_t cpp = chunks_per_plane(L);
  at::parallel_for(0, L.planes * cpp, kGrainChunks, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / cpp;
      const int64_t k0 = (t - p * cpp) * kChunk;
      const int64_t len = std::min(kChunk, L.n - k0);
      const T* zp = z + 2 * (p * L.n + k0);
      T* yr = out + 2 * p * L.n + k0;
      T* yi = yr + L.n;
      const T mr = mean[2 * p], mi = mean[2 * p + 1];
      const T sr = stddev[2 * p], si = stddev[2 * p + 1];
      for (int64_t k = 0; k < len; ++k) {
        yr[k] = math::normalize_value(zp[2 * k], mr, sr);
        yi[k] = math::normalize_value(zp[2 * k + 1], mi, si);
      }
    }
  });
}

template <typename T>
void denormalize_cpu(const T* x, const T* mean, const T* stddev, T* z, const NormalizeLayout& L) {
  const int64_t cpp = chunks_per_plane(L);
  at::parallel_for(0, L.planes * cpp, kGrainChunks, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / cpp;
      const int64_t k0 = (t - p * cpp) * kChunk;
      const int64_t len = std::min(kChunk, L.n - k0);
      const T* xr = x + 2 * p * L.n + k0;
      const T* xi = xr + L.n;
      T* zp = z + 2 * (p * L.n + k0);
      const T mr = mean[2 * p], mi = mean[2 * p + 1];
      const T sr = stddev[2 * p], si = stddev[2 * p + 1];
      for (int64_t k = 0; k < len; ++k) {
        zp[2 * k] = math::denormalize_value(xr[k], mr, sr);
        zp[2 * k + 1] = math::denormalize_value(xi[k], mi, si);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kspace_normalize_cpu(
    const at::Tensor& kspace_in, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& std_in, double eps) {
  detail::check_kspace_normalize_args(kspace_in, mean_in, std_in, eps);
  auto io = detail::prepare_kspace_normalize(kspace_in, mean_in, std_in);
  const NormalizeLayout& L = io.L;
  AT_DISPATCH_COMPLEX_TYPES(io.kspace.scalar_type(), "kspace_normalize_cpu", [&] {
    using T = typename scalar_t::value_type;
    const T* z = reinterpret_cast<const T*>(io.kspace.const_data_ptr<scalar_t>());
    T* m = io.mean.mutable_data_ptr<T>();
    T* s = io.stddev.mutable_data_ptr<T>();
    if (io.given) {
      for (int64_t i = 0; i < 2 * L.planes; ++i) s[i] = math::effective_std(s[i], T(eps));
    } else if (L.planes > 0) {
      normalize_stats_cpu<T>(z, L, static_cast<T>(eps), m, s);
    }
    if (io.out.numel() > 0) normalize_write_cpu<T>(z, m, s, io.out.mutable_data_ptr<T>(), L);
  });
  return {io.out, io.mean, io.stddev};
}

at::Tensor kspace_denormalize_cpu(const at::Tensor& x_in, const at::Tensor& mean_in,
                                  const at::Tensor& std_in) {
  detail::check_kspace_denormalize_args(x_in, mean_in, std_in);
  const auto io = detail::prepare_kspace_denormalize(x_in, mean_in, std_in);
  if (io.out.numel() == 0) return io.out;
  AT_DISPATCH_FLOATING_TYPES(io.x.scalar_type(), "kspace_denormalize_cpu", [&] {
    using T = scalar_t;
    denormalize_cpu<T>(io.x.const_data_ptr<T>(), io.mean.const_data_ptr<T>(),
                       io.stddev.const_data_ptr<T>(),
                       reinterpret_cast<T*>(io.out.mutable_data_ptr<c10::complex<T>>()), io.L);
  });
  return io.out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> kspace_normalize(
    const at::Tensor& kspace, const std::optional<at::Tensor>& mean,
    const std::optional<at::Tensor>& stddev, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kldm::kspace_normalize", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, double)>();
  return op.call(kspace, mean, stddev, eps);
}

at::Tensor kspace_denormalize(const at::Tensor& x, const at::Tensor& mean,
                              const at::Tensor& stddev) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("kldm::kspace_denormalize", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(x, mean, stddev);
}

TORCH_LIBRARY_IMPL(kldm, CPU, m) {
  m.impl("kspace_normalize", &kspace_normalize_cpu);
  m.impl("kspace_denormalize", &kspace_denormalize_cpu);
}

}  // namespace kldm
