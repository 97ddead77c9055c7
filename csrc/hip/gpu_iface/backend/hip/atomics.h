// AMD CDNA: agent-scope fences and atomics as clang builtins. An acquire fence at agent scope
// invalidates the compute unit's vector L1 (buffer_inv), so plain loads after device_fence() see
// other blocks' stores.
#pragma once

#include <cstdint>

namespace tfo::gpu {

TFO_INLINE void device_fence() { __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "agent"); }

TFO_INLINE int32_t atomic_add_device(int32_t* p, int32_t v) {
  return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}

TFO_INLINE float load_coherent_f32(const float* p) { return *p; }

TFO_INLINE Float4 load_coherent_f32x4(const float* p) { return *reinterpret_cast<const Float4*>(p); }

}  // namespace tfo::gpu
