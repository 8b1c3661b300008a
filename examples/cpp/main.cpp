// SPDX-License-Identifier: MIT
// Minimal consumer of libkldm: hard data consistency of a k-space estimate with measured lines,
// without Python. Prints the build and checks that the measured columns are kept exactly.
#include <kldm/ops.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  const kldm::BuildInfo info = kldm::build_info();
  std::cout << "libkldm " << info.version << " (torch " << info.torch_version
            << ", CUDA kernels: " << (info.cuda ? info.cuda_archs : "none") << ")\n";

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
