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

// sm_89+ converts e4m3fn pairs to binary16 in one instruction (exactly: every e4m3fn value is
// a binary16 value).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
inline constexpr bool kHardwareE4M3Fn = true;
// The four e4m3fn bytes e0..e3 of a word as two binary16 pairs, exact values (no scale):
// lo = (e0, e1), hi = (e2, e3).
TFO_INLINE void e4m3fn_x4_to_half_pairs(uint32_t word, uint32_t& lo, uint32_t& hi) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  lo = tfo_emu32::cvt_f16x2_e4m3x2(word & 0xffffu);
  hi = tfo_emu32::cvt_f16x2_e4m3x2(word >> 16);
#else
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n"
      " cvt.rn.f16x2.e4m3x2 %1, h;\n}"
      : "=r"(lo), "=r"(hi)
      : "r"(word));
#endif
}
// The same bytes paired across the word's halves: lo = (e0, e2), hi = (e1, e3).
TFO_INLINE void e4m3fn_x4_to_half_strided(uint32_t word, uint32_t& lo, uint32_t& hi) {
  e4m3fn_x4_to_half_pairs(__byte_perm(word, 0u, 0x3120u), lo, hi);
}
#else
// For algorithm code that compiles once: only a branch that kHardwareE4M3Fn rules out calls it,
// and a call that got through traps instead of returning zeros.
inline constexpr bool kHardwareE4M3Fn = false;
TFO_INLINE void e4m3fn_x4_to_half_pairs(uint32_t, uint32_t&, uint32_t&) { __trap(); }
TFO_INLINE void e4m3fn_x4_to_half_strided(uint32_t, uint32_t&, uint32_t&) { __trap(); }
#endif

}  // namespace tfo::gpu
