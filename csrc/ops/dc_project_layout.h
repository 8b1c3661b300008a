// SPDX-License-Identifier: MIT
// Index layout of dc_project shared by the CPU loop and the CUDA launcher (plain C++, no torch).
//
// pred/measured/out are contiguous [rows, H, W] complex (rows = product of the leading dims).
// The mask is read through the strides of its broadcast to pred's shape (0 on broadcast dims), so a
// [W] column mask is never materialised at full size.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace kldm {

constexpr int kMaxLeadingDims = 8;

struct DcProjectLayout {
  int64_t rows = 0;  // product of leading dims
  int64_t H = 0;
  int64_t W = 0;
  int num_lead = 0;                           // number of leading dims
  int64_t lead_size[kMaxLeadingDims] = {};    // sizes of leading dims
  int64_t lead_stride[kMaxLeadingDims] = {};  // mask strides (elements) of leading dims
  int64_t mask_stride_h = 0;
  int64_t mask_stride_w = 0;

  // Element offset of the mask for leading (flattened) index `row`.
  KLDM_HOST_DEVICE_INLINE int64_t mask_row_offset(int64_t row) const {
    int64_t off = 0;
    for (int d = num_lead - 1; d >= 0; --d) {
      const int64_t i = row % lead_size[d];
      row /= lead_size[d];
      off += i * lead_stride[d];
    }
    return off;
  }
};

}  // namespace kldm
