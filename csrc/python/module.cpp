// SPDX-License-Identifier: MIT
// kspace_ldm._C: the thin Python module. Importing it loads libkldm (linked), which registers the
// kldm ops with the dispatcher; tensors cross through torch.ops, not pybind11, so this module
// includes no torch Python headers and is independent of torch's bundled pybind11 version.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "kldm/ops.h"

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
}
