// SPDX-License-Identifier: MIT
#include <ATen/core/dispatch/Dispatcher.h>

#include "kldm/build_config.h"
#include "kldm/ops.h"

namespace kldm {

BuildInfo build_info() {
  BuildInfo info;
  info.version = KLDM_VERSION;
  info.torch_version = KLDM_TORCH_VERSION;
#ifdef KLDM_WITH_CUDA
  info.cuda = true;
  info.cuda_archs = KLDM_CUDA_ARCHS;
#endif
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#endif
  info.build_date = KLDM_BUILD_DATE;
  return info;
}

std::vector<std::string> registered_ops() {
  std::vector<std::string> names;
  for (const auto& op : c10::Dispatcher::singleton().getAllOpNames()) {
    if (op.name.rfind("kldm::", 0) == 0) names.push_back(op.name);
  }
  return names;
}

}  // namespace kldm
