// SPDX-License-Identifier: MIT
// A consumer of the installed kspace-ldm CMake package (find_package(KspaceLDM)), as scanner
// software would link it; no Python at run time.
//
//   kldm_example                               ops only: hard data consistency on random k-space
//   kldm_example EXPORT_DIR KSPACE MASK OUT    reconstruct a k-space file with kldm::Sampler (cgs)
//
// KSPACE, MASK and OUT are BART-style files (NAME.hdr: "# Dimensions" then the sizes, first dim
// fastest; NAME.cfl: complex64 samples): KSPACE is the measured k-space [B, C, H, W] (hdr dims
// "W H C B"), MASK the sampled columns [W] (non-zero = measured), OUT receives the reconstructed
// k-space (same dims) and OUT_image its RSS image [B, H, W] (dims "W H B").
#include <kldm/ops.h>
#include <kldm/sampler.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// [d0, d1, ...] (first fastest) -> a row-major tensor of sizes [..., d1, d0].
at::Tensor read_cfl(const std::string& name) {
  std::ifstream hdr(name + ".hdr");
  if (!hdr) throw std::runtime_error(name + ".hdr: cannot open");
  std::string line;
  std::getline(hdr, line);  // "# Dimensions"
  std::getline(hdr, line);
  std::istringstream ss(line);
  std::vector<int64_t> dims;
  for (int64_t d; ss >> d;) dims.push_back(d);
  while (dims.size() > 1 && dims.back() == 1) dims.pop_back();
  std::vector<int64_t> sizes(dims.rbegin(), dims.rend());
  auto t = torch::empty(sizes, torch::kComplexFloat);
  std::ifstream cfl(name + ".cfl", std::ios::binary);
  cfl.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (cfl.gcount() != static_cast<std::streamsize>(t.nbytes()))
    throw std::runtime_error(name + ".cfl: shorter than its header says");
  return t;
}

void write_cfl(const std::string& name, const at::Tensor& x) {
  auto t = x.to(torch::kComplexFloat).contiguous().cpu();
  std::ofstream hdr(name + ".hdr");
  hdr << "# Dimensions\n";
  for (int64_t i = t.dim() - 1; i >= 0; --i) hdr << t.size(i) << (i ? " " : "\n");
  std::ofstream cfl(name + ".cfl", std::ios::binary);
  cfl.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
}

int ops_only() {
  torch::manual_seed(0);
  // kspace: [B, C, H, W] complex64; column mask: [W] bool.
  const auto opts = torch::TensorOptions().dtype(torch::kComplexFloat);
  const at::Tensor pred = torch::randn({1, 4, 32, 24}, opts);
  const at::Tensor measured = torch::randn({1, 4, 32, 24}, opts);
  const at::Tensor mask = torch::rand({24}) > 0.5;
  const at::Tensor out = kldm::dc_project(pred, measured, mask, 1.0);
  const bool kept = torch::equal(out.index({"...", mask}), measured.index({"...", mask}));
  const bool untouched = torch::equal(out.index({"...", ~mask}), pred.index({"...", ~mask}));
  std::cout << "measured lines kept: " << kept << ", others untouched: " << untouched << "\n";
  return kept && untouched ? 0 : 1;
}

int reconstruct(const std::string& export_dir, const std::string& kspace_file,
                const std::string& mask_file, const std::string& out_file) {
  kldm::Sampler sampler(export_dir, torch::kCPU);  // verifies the manifest and every package
  at::Tensor kspace = read_cfl(kspace_file);
  if (kspace.dim() < 4) kspace = kspace.reshape({-1, 1, kspace.size(-2), kspace.size(-1)});
  const at::Tensor mask = torch::real(read_cfl(mask_file)).reshape({-1}) != 0;
  kldm::SamplerOptions options;  // cgs with the export's defaults, seed 0
  const kldm::Reconstruction r = sampler.reconstruct(kspace, mask, options);
  write_cfl(out_file, r.kspace);
  write_cfl(out_file + "_image", r.image);
  const bool exact = torch::equal(r.kspace.index({"...", mask}), kspace.index({"...", mask}));
  std::cout << "reconstructed " << r.kspace.sizes()
            << " with cgs; measured samples exact: " << exact << "\n";
  return exact ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const kldm::BuildInfo info = kldm::build_info();
  std::cout << "libkldm " << info.version << " (torch " << info.torch_version
            << ", CUDA kernels: " << (info.cuda ? info.cuda_archs : "none") << ")\n";
  try {
    if (argc == 5) return reconstruct(argv[1], argv[2], argv[3], argv[4]);
    if (argc == 1) return ops_only();
    std::cerr << "usage: kldm_example [EXPORT_DIR KSPACE MASK OUT]\n";
    return 2;
  } catch (const kldm::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
