// NVIDIA sm_80+: fences and atomics of CUDA; coherent loads through L2 (ld.global.cg), since L1 is
// not kept coherent between multiprocessors.
#pragma once

#include <cstdint>

namespace tfo::gpu {

TFO_INLINE void device_fence() { __threadfence(); }

TFO_INLINE int32_t atomic_add_device(int32_t* p, int32_t v) { return atomicAdd(p, v); }

TFO_INLINE float load_coherent_f32(const float* p) { return __ldcg(p); }

TFO_INLINE Float4 load_coherent_f32x4(const float* p) {
  const float4 x = __ldcg(reinterpret_cast<const float4*>(p));
  return {{x.x, x.y, x.z, x.w}};
}

}  // namespace tfo::gpu
