// 16-bit floating-point element types and their conversions.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/vec_types.h:
//   half_t, bf16_t                    IEEE binary16 and bfloat16 storage types (2 bytes each)
//   to_float(x)                       for half_t and bf16_t
//   from_float<T>(float)              round to nearest even
//   pack2<T>(float lo, float hi)      two converted elements in one 32-bit word, lo in bits 0..15
//   kHardwareE4M3Fn                   whether this target converts OCP e4m3fn in hardware
//   e4m3fn_x4_to_half_pairs(word, lo, hi)
//                                     where kHardwareE4M3Fn: the four e4m3fn bytes e0..e3 of word
//                                     (e0 the low byte) as binary16 pairs, exact: lo = (e0, e1),
//                                     hi = (e2, e3)
//   e4m3fn_x4_to_half_strided(word, lo, hi)   the same, paired lo = (e0, e2), hi = (e1, e3)
#pragma once

#include "gpu_iface/platform.h"

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/vec_types.h"
#else
#include "gpu_iface/backend/cuda/vec_types.h"
#endif

namespace tfo::gpu {

static_assert(sizeof(half_t) == 2 && sizeof(bf16_t) == 2, "16-bit element types");

}  // namespace tfo::gpu
