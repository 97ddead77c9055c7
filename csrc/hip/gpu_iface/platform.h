// Execution unit: wave of kWaveSize lanes (64 on AMD CDNA, 32 on NVIDIA), its lane shuffles and the
// group reductions an online softmax needs, thread/block indices, barriers, fast math.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/platform.h:
//   TFO_DEVICE, TFO_HOST_DEVICE, TFO_INLINE, TFO_GLOBAL, TFO_SHARED, TFO_LAUNCH_BOUNDS(n),
//   TFO_DYNAMIC_SHARED_BYTES(name)    declares name, the kernel's dynamic shared memory as uint8_t
//                                     from a 128-byte boundary (an array or a pointer)
//   TFO_LAUNCH_BOUNDS_MIN_BLOCKS(n, blocks) (NVIDIA: registers capped for that many blocks per SM)
//   TFO_MIN_WAVES_PER_SIMD(n)         AMD: registers allocated so that n waves fit per SIMD (a
//                                     floor the compiler keeps, or it fails); NVIDIA: nothing
//   kWaveSize                         lanes per wave (constexpr int)
//   kMaxBlockSharedBytes              shared memory one block may have on every architecture the
//                                     backend targets (constexpr int; the kernels' layouts assert it)
//   kMinBlocksCapsRegisters           whether TFO_LAUNCH_BOUNDS_MIN_BLOCKS caps registers (NVIDIA);
//   TFO_IF_MIN_BLOCKS_CAP(...)        its arguments where it does (instantiations the cap makes distinct)
//   lane_id(), wave_index()           lane within the wave; wave within a 1-D block (wave-uniform)
//   thread_index_x/y(), block_index_x/y/z()
//   shfl_xor(float v, int lane_mask)  value of lane (lane_id() ^ lane_mask)
//   shfl_idx(float v, int src_lane)   value of lane src_lane (every lane of the wave takes part)
//   group_allreduce<kGroup>(v, op)    op-reduce over each aligned group of kGroup consecutive
//                                     lanes (power of two <= kWaveSize); every lane gets the result
//   wave_all(pred)                    true when pred holds on every active lane (wave-uniform)
//   block_sync(), wave_sync()         barrier with shared-memory visibility; wave-level barrier
//   grid_dependency_wait()            wait until the launches this one depends on have completed
//                                     and their stores are visible (a programmatic dependent launch
//                                     on NVIDIA sm_90+); returns at once for plain launches and on AMD
//   grid_dependents_launch()          let the stream's next programmatic dependent launch begin (it
//                                     still waits in grid_dependency_wait()); nothing on AMD
//   fast_exp2(x), fast_rcp(x), fast_log2(x), fast_tanh(x), max_f32(a, b)
//   opaque_int(x)                     x, hidden from the optimiser: values derived from it are
//                                     recomputed where used, not hoisted and held in registers
//   uniform_int(x)                    x, equal on every lane, as a wave-uniform value (AMD: read
//                                     from the first lane into a scalar register)
#pragma once

#include "gpu_iface/backend.h"

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/platform.h"
#else
#include "gpu_iface/backend/cuda/platform.h"
#endif

namespace tfo::gpu {

struct MaxOp {
  TFO_INLINE float operator()(float a, float b) const { return max_f32(a, b); }
};
struct SumOp {
  TFO_INLINE float operator()(float a, float b) const { return a + b; }
};

template <int kGroup>
TFO_INLINE float group_max(float v) {
  return group_allreduce<kGroup>(v, MaxOp{});
}
template <int kGroup>
TFO_INLINE float group_sum(float v) {
  return group_allreduce<kGroup>(v, SumOp{});
}

}  // namespace tfo::gpu
