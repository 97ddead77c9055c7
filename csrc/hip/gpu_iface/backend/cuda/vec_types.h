// NVIDIA: the CUDA toolkit's __half and __nv_bfloat16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace tfo::gpu {

using half_t = __half;
using bf16_t = __nv_bfloat16;

TFO_INLINE float to_float(half_t x) { return __half2float(x); }
TFO_INLINE float to_float(bf16_t x) { return __bfloat162float(x); }

template <typename T>
TFO_INLINE T from_float(float x);
template <>
TFO_INLINE half_t from_float<half_t>(float x) {
  return __float2half_rn(x);
}
template <>
TFO_INLINE bf16_t from_float<bf16_t>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
TFO_INLINE uint32_t pack2(float lo, float hi);
template <>
TFO_INLINE uint32_t pack2<half_t>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
TFO_INLINE uint32_t pack2<bf16_t>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace tfo::gpu
