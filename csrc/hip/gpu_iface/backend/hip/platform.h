// AMD CDNA (gfx942, gfx950): wave64. Clang builtins only (no inline asm), so a host emulation can
// provide each of them.
#pragma once

#include <cstdint>

// A host emulation defines all of these itself before including the headers.
#ifndef TFO_DEVICE
#define TFO_DEVICE __attribute__((device))
#define TFO_HOST_DEVICE __attribute__((host, device))
#define TFO_INLINE __attribute__((device, always_inline)) inline
#define TFO_GLOBAL __attribute__((global))
#define TFO_SHARED __attribute__((shared))
#define TFO_LAUNCH_BOUNDS(max_threads) __attribute__((amdgpu_flat_work_group_size(1, max_threads)))
#define TFO_MIN_WAVES_PER_SIMD(n) __attribute__((amdgpu_waves_per_eu(n)))
#endif
// A kernel's dynamic shared memory, as bytes from a 128-byte boundary (a host emulation's
// TFO_SHARED makes it the driver's buffer).
#define TFO_DYNAMIC_SHARED_BYTES(name) extern TFO_SHARED __attribute__((aligned(128))) uint8_t name[]
// NVIDIA's register cap for an occupancy target; AMD kernels set theirs with TFO_MIN_WAVES_PER_SIMD.
#define TFO_LAUNCH_BOUNDS_MIN_BLOCKS(max_threads, min_blocks) TFO_LAUNCH_BOUNDS(max_threads)
#define TFO_IF_MIN_BLOCKS_CAP(...)

namespace tfo::gpu {

inline constexpr int kWaveSize = 64;
// LDS a workgroup may allocate on gfx942 (gfx950 has 160 KiB; one layout serves both).
inline constexpr int kMaxBlockSharedBytes = 64 * 1024;
inline constexpr bool kMinBlocksCapsRegisters = false;  // TFO_LAUNCH_BOUNDS_MIN_BLOCKS is the plain bound

TFO_INLINE int thread_index_x() { return __builtin_amdgcn_workitem_id_x(); }
TFO_INLINE int thread_index_y() { return __builtin_amdgcn_workitem_id_y(); }
TFO_INLINE int block_index_x() { return __builtin_amdgcn_workgroup_id_x(); }
TFO_INLINE int block_index_y() { return __builtin_amdgcn_workgroup_id_y(); }
TFO_INLINE int block_index_z() { return __builtin_amdgcn_workgroup_id_z(); }

TFO_INLINE int lane_id() {
  return static_cast<int>(__builtin_amdgcn_mbcnt_hi(~0u, __builtin_amdgcn_mbcnt_lo(~0u, 0u)));
}

// readfirstlane tells the compiler the value is wave-uniform, so it lives in an SGPR.
TFO_INLINE int wave_index() { return __builtin_amdgcn_readfirstlane(thread_index_x() / kWaveSize); }

// Any lane of the wave, through the LDS crossbar (ds_bpermute; no LDS memory is used).
TFO_INLINE float shfl_xor(float v, int lane_mask) {
  const int src_byte_addr = (lane_id() ^ lane_mask) << 2;
  return __builtin_bit_cast(
      float, __builtin_amdgcn_ds_bpermute(src_byte_addr, __builtin_bit_cast(int, v)));
}

TFO_INLINE float shfl_idx(float v, int src_lane) {
  return __builtin_bit_cast(float, __builtin_amdgcn_ds_bpermute(src_lane << 2, __builtin_bit_cast(int, v)));
}

namespace detail {

// DPP controls (CDNA3 ISA, "DPP_CTRL"). They permute within a row of 16 lanes at VALU speed.
inline constexpr int kDppQuadXor1 = 0xB1;      // quad_perm:[1,0,3,2]
inline constexpr int kDppQuadXor2 = 0x4E;      // quad_perm:[2,3,0,1]
inline constexpr int kDppRowHalfMirror = 0x141;  // lane i <- 7-i within each 8 lanes
inline constexpr int kDppRowMirror = 0x140;      // lane i <- 15-i within each 16 lanes

template <int kCtrl>
TFO_INLINE float dpp(float v) {
  const int bits = __builtin_bit_cast(int, v);
  return __builtin_bit_cast(float, __builtin_amdgcn_update_dpp(bits, bits, kCtrl, 0xF, 0xF, false));
}

}  // namespace detail

// Mirrors are not xor shuffles, but once each half of a block holds its half's total, a mirror
// pairs every lane with a lane of the other half, which is all an all-reduce needs.
template <int kGroup, typename Op>
TFO_INLINE float group_allreduce(float v, Op op) {
  static_assert(kGroup >= 1 && kGroup <= kWaveSize && (kGroup & (kGroup - 1)) == 0,
                "group must be a power of two within the wave");
  if constexpr (kGroup >= 2) v = op(v, detail::dpp<detail::kDppQuadXor1>(v));
  if constexpr (kGroup >= 4) v = op(v, detail::dpp<detail::kDppQuadXor2>(v));
  if constexpr (kGroup >= 8) v = op(v, detail::dpp<detail::kDppRowHalfMirror>(v));
  if constexpr (kGroup >= 16) v = op(v, detail::dpp<detail::kDppRowMirror>(v));
  if constexpr (kGroup >= 32) v = op(v, shfl_xor(v, 16));
  if constexpr (kGroup >= 64) v = op(v, shfl_xor(v, 32));
  return v;
}

// No active lane has pred false (inactive lanes contribute zero bits to the ballot).
TFO_INLINE bool wave_all(bool pred) { return __builtin_amdgcn_ballot_w64(!pred) == 0; }

TFO_INLINE void block_sync() {
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}

TFO_INLINE void wave_sync() { __builtin_amdgcn_wave_barrier(); }

// No programmatic dependent launch: launches in a stream run one after another.
TFO_INLINE void grid_dependency_wait() {}
TFO_INLINE void grid_dependents_launch() {}

TFO_INLINE float fast_exp2(float x) { return __builtin_amdgcn_exp2f(x); }
TFO_INLINE float fast_rcp(float x) { return __builtin_amdgcn_rcpf(x); }
TFO_INLINE float fast_log2(float x) { return __builtin_amdgcn_logf(x); }
// tanh(x) = 1 - 2 / (2^(2x log2 e) + 1): saturates to +-1 where the power over- or underflows.
TFO_INLINE float fast_tanh(float x) {
  return 1.0f - 2.0f * fast_rcp(fast_exp2(2.8853900817779268f * x) + 1.0f);
}
TFO_INLINE float max_f32(float a, float b) { return __builtin_fmaxf(a, b); }

// x, as a value the compiler cannot see through: what is derived from it is recomputed where it
// is used instead of being hoisted out of a loop and held in registers.
TFO_INLINE int opaque_int(int x) {
  asm volatile("" : "+v"(x));
  return x;
}
TFO_INLINE int uniform_int(int x) { return __builtin_amdgcn_readfirstlane(x); }

}  // namespace tfo::gpu
