// AMD CDNA: the arrival as an agent-scope acquire-release atomic (clang builtin). Its acquire
// invalidates the compute unit's vector L1 (buffer_inv), which the block's waves share, so plain
// loads after the barrier that follows it see other blocks' stores.
#pragma once

#include <cstdint>

namespace tfo::gpu {

TFO_INLINE int32_t arrive_acq_rel_device(int32_t* p, int32_t v) {
  return __hip_atomic_fetch_add(p, v, __ATOMIC_ACQ_REL, __HIP_MEMORY_SCOPE_AGENT);
}

TFO_INLINE float load_coherent_f32(const float* p) { return *p; }

TFO_INLINE Float4 load_coherent_f32x4(const float* p) { return *reinterpret_cast<const Float4*>(p); }

}  // namespace tfo::gpu
