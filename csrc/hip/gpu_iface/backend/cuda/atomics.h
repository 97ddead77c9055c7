// NVIDIA sm_80+: the arrival as PTX's acquire-release atomic; coherent loads through L2
// (ld.global.cg), since L1 is not kept coherent between multiprocessors.
#pragma once

#include <cstdint>

namespace tfo::gpu {

// One atom.acq_rel.gpu: the release covers the stores the block barrier before it ordered (PTX
// memory model: causality order is transitive through the barrier), the acquire the loads after
// the barrier that follows it, so no thread needs a fence of its own (a fence.sc per thread
// before the count waited for that thread's stores one thread at a time).
TFO_INLINE int32_t arrive_acq_rel_device(int32_t* p, int32_t v) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  return tfo_emu32::atomic_add_acq_rel(p, v);
#else
  int32_t old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
#endif
}

TFO_INLINE float load_coherent_f32(const float* p) { return __ldcg(p); }

TFO_INLINE Float4 load_coherent_f32x4(const float* p) {
  const float4 x = __ldcg(reinterpret_cast<const float4*>(p));
  return {{x.x, x.y, x.z, x.w}};
}

}  // namespace tfo::gpu
