// SPDX-License-Identifier: MIT
// A consumer of the installed kspace-ldm CMake package (find_package(KspaceLDM)), as scanner
// software would link it; no Python at run time.
//
//   kldm_example                               ops only: hard data consistency on random k-space
//   kldm_example EXPORT_DIR KSPACE MASK OUT    reconstruct a k-space file with kldm::Sampler (cgs)
//   kldm_example EXPORT_DIR RAW.h5 OUT         the same from ISMRMRD raw data (built with
//   libismrmrd)
//
// KSPACE, MASK and OUT are BART-style files (NAME.hdr: "# Dimensions" then the sizes, first dim
// fastest; NAME.cfl: complex64 samples): KSPACE is the measured k-space [B, C, H, W] (hdr dims
// "W H C B"), MASK the sampled columns [W] (non-zero = measured), OUT receives the reconstructed
// k-space (same dims) and OUT_image its RSS image [B, H, W] (dims "W H B").
//
// RAW.h5 is a Cartesian 2-D ISMRMRD dataset read with libismrmrd (found by CMake when installed,
// Debian: libismrmrd-dev): line l of kspace_encoding_step_1 goes to column l + W/2 - center of the
// encoded grid, the mask is the lines present (repetition 0; noise scans skipped). kldm-recon and
// kspace_ldm.data.ismrmrd_io do the full validation; this shows the data flow.
#include <kldm/ops.h>
#include <kldm/sampler.h>
#include <torch/torch.h>

#ifdef KLDM_EXAMPLE_WITH_ISMRMRD
#include <ismrmrd/dataset.h>
#include <ismrmrd/ismrmrd.h>
#include <ismrmrd/xml.h>
#endif

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

#ifdef KLDM_EXAMPLE_WITH_ISMRMRD
// ISMRMRD raw data -> k-space [S, C, H, W] complex64 and the column mask [W].
std::pair<at::Tensor, at::Tensor> read_ismrmrd(const std::string& path) {
  ISMRMRD::Dataset d(path.c_str(), "dataset", false);
  std::string xml;
  d.readHeader(xml);
  ISMRMRD::IsmrmrdHeader hdr;
  ISMRMRD::deserialize(xml.c_str(), hdr);
  if (hdr.encoding.size() != 1 ||
      hdr.encoding[0].trajectory != ISMRMRD::TrajectoryType::CARTESIAN ||
      hdr.encoding[0].encodedSpace.matrixSize.z > 1)
    throw std::runtime_error(path + ": only one Cartesian 2-D encoding is supported");
  const auto& enc = hdr.encoding[0];
  const int64_t H = enc.encodedSpace.matrixSize.x, W = enc.encodedSpace.matrixSize.y;
  const int64_t center = enc.encodingLimits.kspace_encoding_step_1
                             ? enc.encodingLimits.kspace_encoding_step_1->center
                             : W / 2;
  const int64_t left = W / 2 - center;
  const int64_t S = enc.encodingLimits.slice ? enc.encodingLimits.slice->maximum + 1 : 1;
  at::Tensor kspace, mask = torch::zeros({W}, torch::kBool);
  ISMRMRD::Acquisition acq;
  for (uint32_t i = 0; i < d.getNumberOfAcquisitions(); ++i) {
    d.readAcquisition(i, acq);
    if (acq.isFlagSet(ISMRMRD::ISMRMRD_ACQ_IS_NOISE_MEASUREMENT) || acq.idx().repetition != 0)
      continue;
    const int64_t C = acq.active_channels(), pre = acq.discard_pre();
    if (!kspace.defined()) kspace = torch::zeros({S, C, H, W}, torch::kComplexFloat);
    const int64_t col = acq.idx().kspace_encode_step_1 + left, s = acq.idx().slice;
    if (col < 0 || col >= W || s >= S || C != kspace.size(1))
      throw std::runtime_error(path + ": acquisition " + std::to_string(i) + " does not fit");
    // the samples are [channel][sample]: one row per coil
    auto line =
        torch::from_blob(acq.getDataPtr(), {C, acq.number_of_samples()}, torch::kComplexFloat);
    kspace.select(0, s).select(-1, col).copy_(line.narrow(1, pre, H));
    mask[col].fill_(true);
  }
  if (!kspace.defined()) throw std::runtime_error(path + ": no acquisitions");
  return {kspace, mask};
}

int reconstruct_ismrmrd(const std::string& export_dir, const std::string& raw,
                        const std::string& out_file) {
  kldm::Sampler sampler(export_dir, torch::kCPU);
  auto [kspace, mask] = read_ismrmrd(raw);
  const kldm::Reconstruction r = sampler.reconstruct(kspace, mask, kldm::SamplerOptions());
  write_cfl(out_file, r.kspace);
  write_cfl(out_file + "_image", r.image);
  const bool exact = torch::equal(r.kspace.index({"...", mask}), kspace.index({"...", mask}));
  std::cout << "reconstructed ISMRMRD " << r.kspace.sizes() << " (" << mask.sum().item<int64_t>()
            << " of " << mask.size(0) << " lines) with cgs; measured samples exact: " << exact
            << "\n";
  return exact ? 0 : 1;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const kldm::BuildInfo info = kldm::build_info();
  std::cout << "libkldm " << info.version << " (torch " << info.torch_version
            << ", CUDA kernels: " << (info.cuda ? info.cuda_archs : "none") << ")\n";
  try {
    if (argc == 5) return reconstruct(argv[1], argv[2], argv[3], argv[4]);
#ifdef KLDM_EXAMPLE_WITH_ISMRMRD
    if (argc == 4) return reconstruct_ismrmrd(argv[1], argv[2], argv[3]);
#else
    if (argc == 4) {
      std::cerr << "error: built without libismrmrd (install libismrmrd-dev and rebuild)\n";
      return 2;
    }
#endif
    if (argc == 1) return ops_only();
    std::cerr << "usage: kldm_example [EXPORT_DIR KSPACE MASK OUT | EXPORT_DIR RAW.h5 OUT]\n";
    return 2;
  } catch (const kldm::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
