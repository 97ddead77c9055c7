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

// Relaxed agent-scope 64-bit accesses (the words of split_merge.h's in-launch merge, which AMD
// does not take: kMergeSplitsInLaunch).
TFO_INLINE void store_word_relaxed(uint64_t* p, uint64_t w) {
  __hip_atomic_store(p, w, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}

TFO_INLINE void store_words_relaxed(uint64_t* p, uint64_t a, uint64_t b) {
  store_word_relaxed(p, a);
  store_word_relaxed(p + 1, b);
}

TFO_INLINE uint64_t load_word_relaxed(const uint64_t* p) {
  return __hip_atomic_load(const_cast<uint64_t*>(p), __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}

}  // namespace tfo::gpu
