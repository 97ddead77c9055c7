// AMD: clang's native _Float16 and __bf16 (HIP 5.2's hip_fp16.h does not build with recent clang).
#pragma once

#include <cstdint>

namespace tfo::gpu {

using half_t = _Float16;
using bf16_t = __bf16;

// Clang extended vector of N elements; the MFMA builtins take these as operands.
template <typename T, int N>
using vec_t = T __attribute__((ext_vector_type(N)));

TFO_INLINE float to_float(half_t x) { return static_cast<float>(x); }
TFO_INLINE float to_float(bf16_t x) { return static_cast<float>(x); }

template <typename T>
TFO_INLINE T from_float(float x) {
  return static_cast<T>(x);
}

template <typename T>
TFO_INLINE uint32_t pack2(float lo, float hi) {
  const vec_t<T, 2> v = {static_cast<T>(lo), static_cast<T>(hi)};
  return __builtin_bit_cast(uint32_t, v);
}

// The AMD backend widens FP8 with fp8.h's bit arithmetic (gfx942's conversion instructions
// take the fnuz encodings). The function is there so that algorithm code compiles once: only a
// branch that kHardwareE4M3Fn rules out calls it, and a call that got through traps instead of
// returning zeros.
inline constexpr bool kHardwareE4M3Fn = false;
TFO_INLINE void e4m3fn_x4_to_half_pairs(uint32_t, uint32_t&, uint32_t&) { __builtin_trap(); }
TFO_INLINE void e4m3fn_x4_to_half_strided(uint32_t, uint32_t&, uint32_t&) { __builtin_trap(); }

}  // namespace tfo::gpu
