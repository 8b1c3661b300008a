// SPDX-License-Identifier: MIT
// KLDM_HOST_DEVICE_INLINE: marks the per-element formulas of the *_math.h headers, which the CPU
// loops (host compiler) and the CUDA kernels (nvcc) both compile, so both paths run the same lines.
#pragma once

#if defined(__CUDACC__)
#define KLDM_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define KLDM_HOST_DEVICE_INLINE inline
#endif
