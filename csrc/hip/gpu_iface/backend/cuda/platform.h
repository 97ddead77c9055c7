// NVIDIA sm_80+: warp32. Thin wrappers over CUDA intrinsics and a little PTX.
//
// Under the host emulation (TFO_GPU_HOST_EMULATION_CUDA, tests/cuda_emulation/) each PTX site
// calls the emulation's function of the same meaning instead; nothing else differs.
#pragma once

#include <cstdint>

#define TFO_DEVICE __device__
#define TFO_HOST_DEVICE __host__ __device__
#define TFO_INLINE __device__ __forceinline__
#define TFO_GLOBAL __global__
#define TFO_SHARED __shared__
// A kernel's dynamic shared memory, as bytes from a 128-byte boundary (under the host emulation:
// the running block's own buffer, so that blocks may run at once).
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
#define TFO_DYNAMIC_SHARED_BYTES(name) uint8_t* const name = ::tfo_emu32::dynamic_shared()
#else
#define TFO_DYNAMIC_SHARED_BYTES(name) extern __shared__ __attribute__((aligned(128))) uint8_t name[]
#endif
#define TFO_LAUNCH_BOUNDS(max_threads) __launch_bounds__(max_threads)
#define TFO_MIN_WAVES_PER_SIMD(n)
// Registers capped so that min_blocks blocks of max_threads fit on an SM.
#define TFO_LAUNCH_BOUNDS_MIN_BLOCKS(max_threads, min_blocks) __launch_bounds__(max_threads, min_blocks)
#define TFO_IF_MIN_BLOCKS_CAP(...) __VA_ARGS__

namespace tfo::gpu {

inline constexpr int kWaveSize = 32;
// Shared memory a block may opt in to on sm_90 (sm_80: 163 KiB, sm_86/sm_89: 99 KiB; the bindings
// check the device's own limit where a layout may exceed those).
inline constexpr int kMaxBlockSharedBytes = 227 * 1024;
inline constexpr bool kMinBlocksCapsRegisters = true;  // TFO_LAUNCH_BOUNDS_MIN_BLOCKS takes effect
inline constexpr unsigned kFullWaveMask = 0xffffffffu;

TFO_INLINE int thread_index_x() { return static_cast<int>(threadIdx.x); }
TFO_INLINE int thread_index_y() { return static_cast<int>(threadIdx.y); }
TFO_INLINE int block_index_x() { return static_cast<int>(blockIdx.x); }
TFO_INLINE int block_index_y() { return static_cast<int>(blockIdx.y); }
TFO_INLINE int block_index_z() { return static_cast<int>(blockIdx.z); }

TFO_INLINE int lane_id() {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  return tfo_emu32::lane_id();
#else
  unsigned lane;
  asm("mov.u32 %0, %%laneid;" : "=r"(lane));
  return static_cast<int>(lane);
#endif
}

// Broadcast from lane 0 so the compiler treats the value as warp-uniform.
TFO_INLINE int wave_index() { return __shfl_sync(kFullWaveMask, thread_index_x() / kWaveSize, 0); }

TFO_INLINE float shfl_xor(float v, int lane_mask) {
  return __shfl_xor_sync(kFullWaveMask, v, lane_mask);
}

TFO_INLINE float shfl_idx(float v, int src_lane) { return __shfl_sync(kFullWaveMask, v, src_lane); }

template <int kGroup, typename Op>
TFO_INLINE float group_allreduce(float v, Op op) {
  static_assert(kGroup >= 1 && kGroup <= kWaveSize && (kGroup & (kGroup - 1)) == 0,
                "group must be a power of two within the warp");
#pragma unroll
  for (int mask = 1; mask < kGroup; mask <<= 1) v = op(v, shfl_xor(v, mask));
  return v;
}

TFO_INLINE bool wave_all(bool pred) { return __all_sync(kFullWaveMask, pred); }

TFO_INLINE void block_sync() { __syncthreads(); }
TFO_INLINE void wave_sync() { __syncwarp(); }

// griddepcontrol (PTX ISA 7.8, sm_90+); below sm_90 there is no programmatic launch to wait for.
// (The host emulation runs one launch at a time: nothing to wait for or to let in.)
TFO_INLINE void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(TFO_GPU_HOST_EMULATION_CUDA)
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

TFO_INLINE void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(TFO_GPU_HOST_EMULATION_CUDA)
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#if defined(TFO_GPU_HOST_EMULATION_CUDA)
TFO_INLINE float fast_exp2(float x) { return tfo_emu32::ex2_approx(x); }
TFO_INLINE float fast_rcp(float x) { return tfo_emu32::rcp_approx(x); }
TFO_INLINE float fast_log2(float x) { return tfo_emu32::lg2_approx(x); }
TFO_INLINE float fast_tanh(float x) { return tfo_emu32::tanh_approx(x); }
#else
TFO_INLINE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
TFO_INLINE float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
TFO_INLINE float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// tanh.approx (sm_75+): relative error about 2^-11, below the half/bfloat16 output precision.
TFO_INLINE float fast_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
#endif
TFO_INLINE float max_f32(float a, float b) { return fmaxf(a, b); }

// x, as a value the compiler cannot see through: what is derived from it is recomputed where it
// is used instead of being hoisted out of a loop and held in registers.
TFO_INLINE int opaque_int(int x) {
#if !defined(TFO_GPU_HOST_EMULATION_CUDA)
  asm volatile("" : "+r"(x));
#endif
  return x;
}
TFO_INLINE int uniform_int(int x) { return x; }  // no scalar registers to steer values into

}  // namespace tfo::gpu
