// FP8 KV-cache elements in portable bit arithmetic (one source for both vendors, no
// vendor FP8 intrinsics): OCP e4m3fn / e5m2 and AMD's e4m3fnuz / e5m2fnuz.
//
// Decoding widens a byte to the bits of a binary16 whose value is the FP8 value times a fixed
// power of two (the sign, exponent and mantissa fields just move); the power of two, folded
// into the dequantisation scale on the host, is all that separates a format from its fnuz
// variant (their exponent biases differ by one):
//
//   e4m3:  half bits = s << 15 | (e m) << 7     value(fn)   = half * 2^8   value(fnuz) = half * 2^7
//   e5m2:  half bits = byte << 8                value(e5m2) = half         value(fnuz) = half / 2
//
// The binary16 conversion handles FP8 subnormals exactly (they become half subnormals).
// NaN encodings are not special-cased: a cache holds finite values. One range is out of reach:
// e5m2fnuz's top binade (|x| >= 32768, exponent field 31) lands on binary16 inf/NaN.
//
// Encoding rounds to nearest even and saturates to the largest finite value, as torch's own
// float -> float8_e4m3fn conversion does.
#pragma once

#include <cstdint>
#include <type_traits>

#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

namespace tfo::kernels {

using namespace tfo::gpu;

// Storage tags of the KV element: the 16-bit types themselves, or one of these.
struct Fp8E4M3 {
  uint8_t bits;
};
struct Fp8E5M2 {
  uint8_t bits;
};

template <typename KV>
inline constexpr bool kIsFp8 = false;
template <>
inline constexpr bool kIsFp8<Fp8E4M3> = true;
template <>
inline constexpr bool kIsFp8<Fp8E5M2> = true;

// The four FP8 formats a cache may hold; kE4M3* decode through Fp8E4M3, kE5M2* through Fp8E5M2.
enum class Fp8Format { kE4M3Fn, kE5M2, kE4M3Fnuz, kE5M2Fnuz };

// The power of two between the FP8 value and the decoded binary16 (host side, into the scale).
inline constexpr float fp8_decode_factor(Fp8Format f) {
  switch (f) {
    case Fp8Format::kE4M3Fn: return 256.0f;
    case Fp8Format::kE4M3Fnuz: return 128.0f;
    case Fp8Format::kE5M2: return 1.0f;
    case Fp8Format::kE5M2Fnuz: return 0.5f;
  }
  return 1.0f;
}

template <typename T>
TFO_INLINE T bits_to(uint16_t bits) {
  T x;
  __builtin_memcpy(&x, &bits, sizeof(x));
  return x;
}

template <typename T>
TFO_INLINE uint16_t to_bits(T x) {
  uint16_t bits;
  __builtin_memcpy(&bits, &x, sizeof(bits));
  return bits;
}

// Four FP8 elements of one 32-bit word (element 0 in the low byte) as binary16 bits. Whole-word
// masks build two pairs at once: even = (element 0, element 2), odd = (element 1, element 3).
template <typename KV>
TFO_INLINE void fp8x4_to_half_bits(uint32_t word, uint32_t& even, uint32_t& odd) {
  if constexpr (std::is_same_v<KV, Fp8E4M3>) {
    const uint32_t e = word & 0x00ff00ffu, o = (word >> 8) & 0x00ff00ffu;
    even = ((e & 0x00800080u) << 8) | ((e & 0x007f007fu) << 7);
    odd = ((o & 0x00800080u) << 8) | ((o & 0x007f007fu) << 7);
  } else {
    even = (word << 8) & 0xff00ff00u;
    odd = word & 0xff00ff00u;
  }
}

// The same four elements as binary16 pairs in element order: lo = (0, 1), hi = (2, 3).
template <typename KV>
TFO_INLINE void fp8x4_to_half_pairs(uint32_t word, uint32_t& lo, uint32_t& hi) {
  uint32_t even, odd;
  fp8x4_to_half_bits<KV>(word, even, odd);
  lo = (even & 0xffffu) | (odd << 16);
  hi = (even >> 16) | (odd & 0xffff0000u);
}

// The same four elements as floats, before scaling.
template <typename KV>
TFO_INLINE void fp8x4_to_float(uint32_t word, float* out) {
  uint32_t even, odd;
  fp8x4_to_half_bits<KV>(word, even, odd);
  out[0] = to_float(bits_to<half_t>(static_cast<uint16_t>(even & 0xffffu)));
  out[1] = to_float(bits_to<half_t>(static_cast<uint16_t>(odd & 0xffffu)));
  out[2] = to_float(bits_to<half_t>(static_cast<uint16_t>(even >> 16)));
  out[3] = to_float(bits_to<half_t>(static_cast<uint16_t>(odd >> 16)));
}

// Round-to-nearest-even float -> FP8 byte with saturation.
//   kMantBits: 3 (e4m3) or 2 (e5m2); kBias: 7, 15 (OCP) or 8, 16 (fnuz); kMaxFinite: 448, 57344, 240.
template <int kMantBits, int kBias, bool kFnuz>
TFO_INLINE uint8_t float_to_fp8(float f, float max_finite) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  const uint32_t sign = bits & 0x80000000u;
  uint32_t a = bits ^ sign;
  if (a > 0x7f800000u) return kFnuz ? uint8_t{0x80} : static_cast<uint8_t>(0x7f | (sign >> 24));
  float af;
  __builtin_memcpy(&af, &a, 4);
  af = af < max_finite ? af : max_finite;
  __builtin_memcpy(&a, &af, 4);
  uint32_t result;
  if (a < static_cast<uint32_t>(127 + 1 - kBias) << 23) {
    // Below the smallest normal: adding 2^(exponent of the last subnormal bit + 23 - kMantBits)
    // lets the float adder do the round-to-nearest-even.
    constexpr uint32_t kDenormMagic = static_cast<uint32_t>((127 - kBias) + (23 - kMantBits) + 1)
                                      << 23;
    float magic, sum;
    __builtin_memcpy(&magic, &kDenormMagic, 4);
    sum = af + magic;
    uint32_t sum_bits;
    __builtin_memcpy(&sum_bits, &sum, 4);
    result = sum_bits - kDenormMagic;
  } else {
    const uint32_t mant_odd = (a >> (23 - kMantBits)) & 1u;
    a += (static_cast<uint32_t>(kBias - 127) << 23) + ((1u << (22 - kMantBits)) - 1u);
    a += mant_odd;
    result = a >> (23 - kMantBits);
  }
  if (kFnuz && result == 0) return 0;  // fnuz has no negative zero (0x80 is its NaN)
  return static_cast<uint8_t>(result | (sign >> 24));
}

template <Fp8Format F>
TFO_INLINE uint8_t encode_fp8(float f) {
  if constexpr (F == Fp8Format::kE4M3Fn) return float_to_fp8<3, 7, false>(f, 448.0f);
  if constexpr (F == Fp8Format::kE5M2) return float_to_fp8<2, 15, false>(f, 57344.0f);
  if constexpr (F == Fp8Format::kE4M3Fnuz) return float_to_fp8<3, 8, true>(f, 240.0f);
  return float_to_fp8<2, 16, true>(f, 57344.0f);
}

}  // namespace tfo::kernels
