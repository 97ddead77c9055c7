// Cross-block communication inside one launch: a device-scope acquire-release counter, and
// loads of data that other blocks of the launch wrote.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/atomics.h:
//   arrive_acq_rel_device(int32_t* p, v)
//                                     atomically adds v at device scope, as a release and an
//                                     acquire; returns the old value. Called by one thread after
//                                     a block barrier, it publishes every store the block made
//                                     before that barrier; a block whose add observes other
//                                     blocks' adds sees, after its next barrier, what they
//                                     published
//   load_coherent_f32x4(const float* p), load_coherent_f32(const float* p)
//                                     loads that do not hit a stale line of a per-multiprocessor
//                                     cache (p 16-byte aligned for the x4 form)
//   store_word_relaxed(uint64_t* p, w), store_words_relaxed(uint64_t* p, a, b)
//                                     relaxed device-scope stores of one or two (p 16-byte
//                                     aligned) 64-bit words, each seen by another block whole or
//                                     not at all
//   load_word_relaxed(const uint64_t* p)
//                                     a relaxed device-scope load of one 64-bit word, which a
//                                     poll repeats until another block's store shows (never served
//                                     from a per-multiprocessor cache)
//
// The pattern: every thread stores, block_sync(), one thread counts with arrive_acq_rel_device;
// the block that completes the count runs block_sync() and reads the other blocks' stores with
// the coherent loads. The words serve a merge in which every word carries its own data and
// flag (split_merge.h): no barrier, fence or count orders them.
#pragma once

#include "gpu_iface/platform.h"

namespace tfo::gpu {

struct alignas(16) Float4 {
  float v[4];
};

}  // namespace tfo::gpu

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/atomics.h"
#else
#include "gpu_iface/backend/cuda/atomics.h"
#endif
