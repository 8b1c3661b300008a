// SPDX-License-Identifier: MIT
// kldm::Sampler: running the AOTInductor packages: chunking to the exported batch range, timing,
// and on CUDA one captured graph per (package, input shapes), replayed (see sampler_impl.h).
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>

#ifdef KLDM_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "sampler_impl.h"

namespace kldm {

// Network calls, chunked to the exported batch size when the batch is static.
std::vector<at::Tensor> Sampler::Impl::run(const Package& pkg,
                                           std::vector<at::Tensor> inputs) const {
  // Chunks of at most max_batch samples; a chunk below min_batch is padded with copies of its
  // last sample and the padding dropped from the outputs (exact: every network is per-sample).
  const int64_t B = inputs[0].size(0);
  if (profiling) sync();
  auto t_start = std::chrono::steady_clock::now();
  std::vector<std::vector<at::Tensor>> parts;
  for (int64_t s = 0; s < B; s += pkg.max_batch) {
    const int64_t n = std::min(pkg.max_batch, B - s);
    const int64_t pad = std::max<int64_t>(0, pkg.min_batch - n);
    std::vector<at::Tensor> in;
    for (auto& t : inputs) {
      auto c = t.narrow(0, s, n);
      if (pad > 0) {
        auto sz = c.sizes().vec();
        sz[0] = pad;
        c = at::cat({c, c.narrow(0, n - 1, 1).expand(sz)}, 0);
      }
      in.push_back(c.contiguous());
    }
    auto o = call(pkg, std::move(in));
    if (pad > 0)
      for (auto& t : o) t = t.narrow(0, 0, n);
    parts.push_back(std::move(o));
    ++net_calls;
  }
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < parts[0].size(); ++i) {
    std::vector<at::Tensor> cat;
    for (auto& p : parts) cat.push_back(p[i]);
    out.push_back(cat.size() == 1 ? cat[0].contiguous() : at::cat(cat, 0));
  }
  if (profiling) {
    sync();
    net_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  }
  return out;
}

void Sampler::Impl::sync() const {
  if (device.is_cuda())
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->synchronizeDevice(device.index());
}

// One package call at fixed shapes: eager, or (CUDA) replayed from a captured graph. A CUDA
// graph replaces the hundreds of kernel launches of a network (the cost of small latents on a
// GPU) by one; the sampler loop calls every network with the same shapes, so each
// (package, shapes) is captured once, on its second call, and replayed from then on.
std::vector<at::Tensor> Sampler::Impl::call(const Package& pkg, std::vector<at::Tensor> in) const {
#ifdef KLDM_WITH_CUDA
  if (device.is_cuda() && use_graphs && graph_error.empty()) {
    std::vector<int64_t> key;
    for (const auto& t : in) {
      key.insert(key.end(), t.sizes().begin(), t.sizes().end());
      key.push_back(-1);
    }
    GraphSlot& g = pkg.graphs[key];
    if (!g.graph) {
      if (g.eager_calls++ == 0) return pkg.loader->run(in);
      try {
        capture(pkg, g, in);
      } catch (const std::exception& e) {
        // Never fatal: note why (Sampler::graph_error) and run every call eagerly from now on.
        std::string what = e.what();
        graph_error = pkg.name + ": " + what.substr(0, what.find('\n'));
        pkg.graphs.clear();
        return pkg.loader->run(in);
      }
    } else {
      for (size_t i = 0; i < in.size(); ++i) g.in[i].copy_(in[i]);
    }
    g.graph->replay();
    std::vector<at::Tensor> out;
    for (const auto& o : g.out) out.push_back(o.clone());  // the next replay overwrites g.out
    return out;
  }
#endif
  return pkg.loader->run(in);
}

#ifdef KLDM_WITH_CUDA
void Sampler::Impl::capture(const Package& pkg, GraphSlot& g,
                            const std::vector<at::Tensor>& in) const {
  g.in.clear();
  for (const auto& t : in) g.in.push_back(t.clone());
  // Capture runs on a side stream (never the legacy default stream); the package runs on the
  // current stream, which the guard sets. Capturing executes nothing, so no ordering with the
  // main stream is needed: the replays run on it, after the inputs are copied in.
  auto side = c10::cuda::getStreamFromPool(false, device.index());
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  {
    c10::cuda::CUDAStreamGuard guard(side);
    // thread-local mode: other threads' CUDA calls (e.g. Python's) do not invalidate it
    graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    try {
      g.out = pkg.loader->run(g.in);
    } catch (...) {
      try {
        graph->capture_end();
      } catch (...) {
      }
      g.out.clear();
      throw;
    }
    graph->capture_end();
  }
  g.graph = std::move(graph);
}
#endif

int64_t Sampler::Impl::graph_count() const {
  int64_t n = 0;
  for (const Package* p : {&encoder, &decoder, &decoder_vjp, &denoiser})
    for (const auto& kv : p->graphs)
#ifdef KLDM_WITH_CUDA
      n += kv.second.graph ? 1 : 0;
#else
      (void)kv;
#endif
  return n;
}

}  // namespace kldm
