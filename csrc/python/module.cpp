// SPDX-License-Identifier: MIT
// kspace_ldm._C: the thin Python module. Importing it loads libkldm (linked), which registers the
// kldm ops with the dispatcher (tensors reach the ops through torch.ops). It also exposes the C++
// sampler, kldm::Sampler, for `kldm recon --backend cpp`; tensors cross through torch's pybind11
// casters (compiled against torch's own pybind11 headers, see CMakeLists.txt).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "kldm/espirit.h"
#include "kldm/ops.h"
#include "kldm/sampler.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "kspace-ldm native core (libkldm)";
  m.def(
      "build_info",
      [] {
        const kldm::BuildInfo b = kldm::build_info();
        py::dict d;
        d["version"] = b.version;
        d["torch_version"] = b.torch_version;
        d["cuda"] = b.cuda;
        d["cuda_archs"] = b.cuda_archs;
        d["compiler"] = b.compiler;
        d["build_date"] = b.build_date;
        return d;
      },
      "What libkldm was built with: version, torch, CUDA kernels and architectures.");
  m.def("registered_ops", &kldm::registered_ops, "Names of the kldm ops in the dispatcher.");
  m.def("sha256_file", &kldm::sha256_file, py::arg("path"), "SHA-256 of a file (lower-case hex).");

  // kldm::Error -> kspace_ldm._C.SamplerError (a RuntimeError): the CLI turns it into one line.
  py::register_exception<kldm::Error>(m, "SamplerError", PyExc_RuntimeError);

  m.def(
      "espirit_maps",
      [](const at::Tensor& kspace, int64_t kernel, int64_t calib_size, double threshold,
         double crop, int64_t phase_ref) {
        kldm::EspiritOptions o;
        o.kernel_h = o.kernel_w = kernel;
        o.calib_h = o.calib_w = calib_size;
        o.threshold = threshold;
        o.crop = crop;
        o.phase_ref = phase_ref;
        py::gil_scoped_release release;
        return kldm::espirit_maps(kspace, o);
      },
      py::arg("kspace"), py::arg("kernel") = 6, py::arg("calib_size") = 24,
      py::arg("threshold") = 0.001, py::arg("crop") = 0.6, py::arg("phase_ref") = -1,
      "kldm::espirit_maps: (maps [B, C, H, W], eigenvalues [B, 1, H, W]); phase_ref -1 pca, -2 "
      "none, c a coil. Raises SamplerError.");
  m.def(
      "calibration_region",
      [](const at::Tensor& sampled, int64_t calib_size) {
        auto r = kldm::calibration_region(sampled, calib_size, calib_size);
        return py::make_tuple(r[0], r[1], r[2], r[3]);
      },
      py::arg("sampled"), py::arg("calib_size") = 24, "kldm::calibration_region (r0, r1, c0, c1).");

  py::class_<kldm::Sampler>(m, "Sampler", "kldm::Sampler: cgs / cgs-ref on an export directory.")
      .def(py::init([](const std::string& dir, const std::string& device,
                       const std::string& expect_sha256) {
             py::gil_scoped_release release;
             return std::make_unique<kldm::Sampler>(dir, c10::Device(device), expect_sha256);
           }),
           py::arg("export_dir"), py::arg("device") = "cpu", py::arg("expect_sha256") = "")
      .def(
          "reconstruct",
          [](const kldm::Sampler& s, const at::Tensor& kspace, const at::Tensor& mask,
             const py::object& options, const std::string& coil_combine,
             std::optional<at::Tensor> maps) {
            // kspace_ldm.sampling.cgs.SamplerOptions -> kldm::SamplerOptions, field by field (same
            // names; None -> std::nullopt: the manifest's default).
            kldm::SamplerOptions o;
            o.sampler = options.attr("sampler").cast<std::string>();
            o.steps = options.attr("steps").cast<std::optional<int64_t>>();
            o.t0 = options.attr("t0").cast<std::optional<int64_t>>();
            o.guidance = options.attr("guidance").cast<std::optional<double>>();
            o.eta = options.attr("eta").cast<double>();
            o.refit = options.attr("refit").cast<bool>();
            o.samples = options.attr("samples").cast<int64_t>();
            o.seed = options.attr("seed").cast<uint64_t>();
            o.start = options.attr("start").cast<std::optional<std::string>>().value_or("");
            o.coil_combine = coil_combine;
            if (maps) o.maps = *maps;
            py::gil_scoped_release release;
            kldm::Reconstruction r = s.reconstruct(kspace, mask, o);
            return std::make_pair(r.kspace, r.image);
          },
          py::arg("kspace"), py::arg("mask"), py::arg("options"), py::arg("coil_combine") = "auto",
          py::arg("maps") = py::none(),
          "(kspace [B, C, H, W] complex64, image [B, H, W] float32); options: "
          "kspace_ldm.sampling.cgs.SamplerOptions; coil_combine: auto|espirit|channels; maps "
          "[B|1, C, H, W] complex64: coil sensitivities for the coil-agnostic path")
      .def_property_readonly("info",
                             [](const kldm::Sampler& s) {
                               const auto& i = s.info();
                               py::dict d;
                               d["directory"] = i.directory;
                               d["device"] = i.device;
                               d["torch_version"] = i.torch_version;
                               d["kspace_ldm_version"] = i.kspace_ldm_version;
                               d["coils"] = i.coils;
                               d["height"] = i.height;
                               d["width"] = i.width;
                               d["batch"] = i.batch;
                               d["dynamic_batch"] = i.dynamic_batch;
                               d["num_train_timesteps"] = i.num_train_timesteps;
                               return d;
                             })
      .def("network_seconds", &kldm::Sampler::network_seconds)
      .def("network_calls", &kldm::Sampler::network_calls)
      .def("reset_timers", &kldm::Sampler::reset_timers)
      .def("set_profiling", &kldm::Sampler::set_profiling, py::arg("on"))
      .def_property("cuda_graphs", &kldm::Sampler::cuda_graphs, &kldm::Sampler::set_cuda_graphs)
      .def_property_readonly("cuda_graph_count", &kldm::Sampler::cuda_graph_count)
      .def_property_readonly("cuda_graph_error", &kldm::Sampler::cuda_graph_error);
}
