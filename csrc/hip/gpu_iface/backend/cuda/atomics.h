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

// Relaxed device-scope 64-bit accesses (PTX: aligned scalar accesses of up to 64 bits are
// single-copy atomic; a vector access is one such access per element).
TFO_INLINE void store_word_relaxed(uint64_t* p, uint64_t w) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  tfo_emu32::store_word_relaxed(p, w);
#else
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(p), "l"(w) : "memory");
#endif
}

TFO_INLINE void store_words_relaxed(uint64_t* p, uint64_t a, uint64_t b) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  tfo_emu32::store_word_relaxed(p, a);
  tfo_emu32::store_word_relaxed(p + 1, b);
#else
  asm volatile("st.relaxed.gpu.global.v2.u64 [%0], {%1, %2};\n" ::"l"(p), "l"(a), "l"(b) : "memory");
#endif
}

TFO_INLINE uint64_t load_word_relaxed(const uint64_t* p) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  return tfo_emu32::load_word_relaxed(p);
#else
  uint64_t w;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];\n" : "=l"(w) : "l"(p) : "memory");
  return w;
#endif
}

}  // namespace tfo::gpu
