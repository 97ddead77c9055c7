// AMD CDNA: s_memrealtime (a constant 100 MHz clock on CDNA3), s_memtime, the HW_ID register.
#pragma once

#include <cstdint>

namespace tfo::gpu {

inline constexpr int64_t kRealtimeNsPerTick = 10;  // s_memrealtime's 100 MHz

TFO_INLINE int64_t global_time_ns() {
  return static_cast<int64_t>(__builtin_amdgcn_s_memrealtime()) * kRealtimeNsPerTick;
}

TFO_INLINE int64_t cycle_count() { return static_cast<int64_t>(__builtin_amdgcn_s_memtime()); }

// s_getreg_b32 of HW_REG_HW_ID (id 4), all 32 bits: size - 1 = 31 at bits 11-15, offset 0.
TFO_INLINE int64_t multiprocessor_id() { return static_cast<int64_t>(__builtin_amdgcn_s_getreg((31 << 11) | 4)); }

}  // namespace tfo::gpu
