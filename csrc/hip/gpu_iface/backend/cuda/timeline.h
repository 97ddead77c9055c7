// NVIDIA: %globaltimer (ns), clock64, %smid.
#pragma once

#include <cstdint>

namespace tfo::gpu {

TFO_INLINE int64_t global_time_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return static_cast<int64_t>(t);
}

TFO_INLINE int64_t cycle_count() { return static_cast<int64_t>(clock64()); }

TFO_INLINE int64_t multiprocessor_id() {
  uint32_t sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  return sm;
}

}  // namespace tfo::gpu
