// Host emulation of the NVIDIA warp32 platform: runs the CUDA backend of csrc/hip/gpu_iface (and
// the kernels written on it) on the CPU, so that the code paths only NVIDIA builds take (two
// K/V stages with asynchronous copies, the tensor-core decode's wide shape, FP8 tiles read as
// 8-bit fragments, the split merge inside the decode launch) are checked against a float64
// reference on machines without a GPU.
//
// Include this before any gpu_iface header. It selects the CUDA backend
// (TFO_GPU_HOST_EMULATION_CUDA), whose PTX sites then call the tfo_emu32:: functions below, and
// supplies the CUDA intrinsics that backend uses. A block runs as one OS thread per thread; the
// 32 threads of a warp meet at a warp barrier for every cross-lane operation (shuffles, votes,
// ldmatrix, mma.sync), and __syncthreads is a barrier of the whole block. Blocks run one after
// another, so __shared__ variables are statics and a split's merge sees every other block's
// partial rows; or, as a cooperative launch's do (launch_concurrent), all at once, each with
// its own dynamic shared memory. Operand and result layouts of mma.sync.m16n8k16 and ldmatrix follow the PTX ISA
// ("Matrix Fragments for mma.m16n8k16", "ldmatrix"), written here from it, not from the
// backend's own description of them. cp.async copies are queued per thread and land only when
// cp.async.wait_group releases their group, so a read of a stage before its wait sees stale
// bytes; with TFO_EMU32_COPIES_LAND_AT_COMMIT they land as their group is committed instead,
// the other end of what the hardware allows, so a stage overwritten while it is still read
// (a copy issued too early) sees the new bytes. Host builds take the backend's sm_80 paths (no
// __CUDA_ARCH__: no stmatrix, FP8 widened by the bit path), or with TFO_EMU32_ARCH=900 its sm_90
// ones (stmatrix, the e4m3 conversion instruction; programmatic launch is a no-op: launches run
// one at a time).
//
// Limits: cross-lane operations are reached by all 32 lanes of a warp (the kernels' warps never
// diverge around them; a block whose threads do not all finish in time fails: block_threads.h);
// shared addresses are offsets from one 128-byte aligned anchor, which a driver defines
// (tfo_emu32::shared_anchor) in front of its dynamic shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "../emulation_common/block_threads.h"

// CUDA's declaration specifiers as plain C++ (the CUDA headers above define them as attributes).
#undef __device__
#undef __host__
#undef __forceinline__
#undef __global__
#undef __shared__
#undef __launch_bounds__
#define __device__
#define __host__
#define __forceinline__ inline
#define __global__
#ifndef TFO_EMU32_SHARED
#define TFO_EMU32_SHARED static
#endif
#define __shared__ TFO_EMU32_SHARED
#define __launch_bounds__(...)

#define TFO_GPU_HOST_EMULATION_CUDA 1

namespace tfo_emu32 {

inline constexpr int kWarp = 32;

// The shared-memory addresses the backend computes (cvta.to.shared) are byte offsets from here.
extern unsigned char* shared_anchor;

struct WarpExchange {
  static constexpr int kBytesPerLane = 64;
  WarpExchange() : barrier(kWarp) {}
  std::barrier<> barrier;
  alignas(16) unsigned char slot[kWarp][kBytesPerLane];
};

struct Block {
  explicit Block(int threads, unsigned char* shared = nullptr)
      : barrier(threads), warps(threads / kWarp), shared(shared) {
    if (threads % kWarp != 0) fail_block();
    for (auto& w : warps) w = std::make_unique<WarpExchange>();
  }
  static void fail_block() {
    std::fprintf(stderr, "warp32 emulation: a block must be whole warps\n");
    std::abort();
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<WarpExchange>> warps;
  unsigned char* shared;  // its dynamic shared memory where blocks run at once; else shared_anchor
};

struct Index3 {
  unsigned x = 0, y = 0, z = 0;
};

// A copy that cp.async issued and that lands when its group is waited for.
struct PendingCopy {
  void* dst;
  const void* src;
  int src_bytes;
};

struct LaneState {
  Index3 thread, block;
  int lane = 0;
  Block* block_state = nullptr;
  WarpExchange* warp = nullptr;
  std::vector<PendingCopy> open_group;                // issued, not yet committed
  std::vector<std::vector<PendingCopy>> committed;    // oldest first
};

inline thread_local LaneState lane_state;

inline void fail(const char* what) {
  std::fprintf(stderr, "warp32 emulation: %s\n", what);
  std::abort();
}

inline void warp_barrier() { lane_state.warp->barrier.arrive_and_wait(); }
inline void block_barrier() { lane_state.block_state->barrier.arrive_and_wait(); }

// Every lane's value of x, in lane order.
template <typename T>
inline void warp_gather(const T& x, T (&all)[kWarp]) {
  static_assert(sizeof(T) <= WarpExchange::kBytesPerLane, "exchange slot too small");
  WarpExchange& w = *lane_state.warp;
  std::memcpy(w.slot[lane_state.lane], &x, sizeof(T));
  w.barrier.arrive_and_wait();
  for (int l = 0; l < kWarp; ++l) std::memcpy(&all[l], w.slot[l], sizeof(T));
  w.barrier.arrive_and_wait();  // the slots may be reused
}

inline void check_full_mask(unsigned mask) {
  if (mask != 0xffffffffu) fail("a cross-lane operation on part of a warp is not emulated");
}

inline int lane_id() { return lane_state.lane; }

inline float ex2_approx(float x) { return std::exp2(x); }
inline float rcp_approx(float x) { return 1.0f / x; }
inline float lg2_approx(float x) { return std::log2(x); }
inline float tanh_approx(float x) { return std::tanh(x); }

// The running block's dynamic shared memory (TFO_DYNAMIC_SHARED_BYTES): its own buffer where the
// launch runs its blocks at once (launch_concurrent), else the driver's shared_anchor. Shared
// addresses are offsets from it.
inline unsigned char* dynamic_shared() {
  const Block* b = lane_state.block_state;
  return b != nullptr && b->shared != nullptr ? b->shared : shared_anchor;
}

inline uint32_t shared_offset(const void* p) {
  const std::ptrdiff_t d = static_cast<const unsigned char*>(p) - dynamic_shared();
  if (d < 0 || d >= (std::ptrdiff_t{1} << 31)) fail("a shared address outside the emulated shared memory");
  return static_cast<uint32_t>(d);
}

inline unsigned char* shared_pointer(uint32_t offset) { return dynamic_shared() + offset; }

// st.relaxed.gpu.u64 and ld.relaxed.gpu.u64. A poll's load yields, so that the blocks it waits
// for get the host's cores.
inline void store_word_relaxed(uint64_t* p, uint64_t w) {
  std::atomic_ref<uint64_t>(*p).store(w, std::memory_order_relaxed);
}
inline uint64_t load_word_relaxed(const uint64_t* p) {
  std::this_thread::yield();
  return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(p)).load(std::memory_order_relaxed);
}

// atom.acq_rel.gpu.global.add.s32 (blocks run one after another: only the value matters here).
inline int32_t atomic_add_acq_rel(int32_t* p, int32_t v) {
  return std::atomic_ref<int32_t>(*p).fetch_add(v, std::memory_order_acq_rel);
}

// cp.async.cg ... 16, src_bytes: 16 bytes, or zeros where src_bytes is 0.
inline void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  if (src_bytes != 0 && src_bytes != 16) fail("cp.async with a partial source is not emulated");
  lane_state.open_group.push_back({smem, gmem, src_bytes});
}

inline void land(const PendingCopy& c) {
  if (c.src_bytes == 16) std::memcpy(c.dst, c.src, 16);
  else std::memset(c.dst, 0, 16);
}

inline void cp_async_commit() {
#if defined(TFO_EMU32_COPIES_LAND_AT_COMMIT)
  for (const PendingCopy& c : lane_state.open_group) land(c);
  lane_state.open_group.clear();
#endif
  lane_state.committed.push_back(std::move(lane_state.open_group));
  lane_state.open_group.clear();
}

// cp.async.wait_group pending: every committed group but the newest `pending` has landed.
inline void cp_async_wait(int pending) {
  auto& groups = lane_state.committed;
  while (static_cast<int>(groups.size()) > pending) {
    for (const PendingCopy& c : groups.front()) land(c);
    groups.erase(groups.begin());
  }
}

inline void load_relaxed_16b(uint32_t* w, const void* gmem) {
  std::memcpy(w, gmem, 16);
}

template <typename T>
inline float element16(uint32_t word, int which) {
  const uint16_t bits = static_cast<uint16_t>(which == 0 ? word & 0xffffu : word >> 16);
  if constexpr (std::is_same_v<T, __half>) {
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma: __half or __nv_bfloat16");
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D (16 x 8) = A (16 x 16) B (16 x 8) + C, with
// g = lane / 4, t = lane % 4 (PTX ISA):
//   A a[i]: row g + 8 (i % 2), k 2t + 8 (i / 2) + {0, 1}   (lower half: the lower k)
//   B b[i]: k 2t + 8 i + {0, 1}, column g
//   C c[i]: row g + 8 (i / 2), column 2t + i % 2
// Products in float64, rounded once per output element.
template <typename T>
inline void mma_m16n8k16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  struct Operands {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[kWarp];
  warp_gather(mine, all);
  double A[16][16], B[16][8];
  for (int l = 0; l < kWarp; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      for (int h = 0; h < 2; ++h) A[g + 8 * (i % 2)][2 * t + 8 * (i / 2) + h] = element16<T>(all[l].a[i], h);
    }
    for (int i = 0; i < 2; ++i) {
      for (int h = 0; h < 2; ++h) B[2 * t + 8 * i + h][g] = element16<T>(all[l].b[i], h);
    }
  }
  const int g = lane_state.lane / 4, t = lane_state.lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double acc = c[i];
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    c[i] = static_cast<float>(acc);
  }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8m .. 8m + 7 give the shared
// addresses of rows 0..7 of matrix m (8 b16 elements each); register m of lane l receives row
// l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of matrix m, or of its transpose with .trans.
inline void ldmatrix_x4(uint32_t* r, uint32_t address, bool trans) {
  uint32_t rows[kWarp];
  warp_gather(address, rows);
  const int l = lane_state.lane;
  auto at = [&](int m, int row, int col) {
    uint16_t v;
    std::memcpy(&v, shared_pointer(rows[8 * m + row]) + 2 * col, sizeof v);
    return static_cast<uint32_t>(v);
  };
  for (int m = 0; m < 4; ++m) {
    if (!trans) {
      r[m] = at(m, l / 4, 2 * (l % 4)) | at(m, l / 4, 2 * (l % 4) + 1) << 16;
    } else {
      r[m] = at(m, 2 * (l % 4), l / 4) | at(m, 2 * (l % 4) + 1, l / 4) << 16;
    }
  }
}

// movmatrix.sync.aligned.m8n8.trans.b16: lane l holds row l / 4, elements 2 (l % 4) and
// 2 (l % 4) + 1 of an 8 x 8 matrix of b16; it receives the same elements of the transpose.
inline uint32_t movmatrix_trans(uint32_t x) {
  uint32_t all[kWarp];
  warp_gather(x, all);
  const int l = lane_state.lane;
  auto at = [&](int row, int col) { return (all[4 * row + col / 2] >> (16 * (col % 2))) & 0xffffu; };
  return at(2 * (l % 4), l / 4) | at(2 * (l % 4) + 1, l / 4) << 16;
}

// stmatrix.sync.aligned.m8n8.x4.shared.b16 (sm_90): ldmatrix's inverse; register m of lane l
// (row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of matrix m) goes to the row address lane
// 8m + l / 4 gave.
inline void stmatrix_x4(uint32_t address, const uint32_t* w) {
  uint32_t rows[kWarp];
  warp_gather(address, rows);
  const int l = lane_state.lane;
  for (int m = 0; m < 4; ++m) std::memcpy(shared_pointer(rows[8 * m + l / 4]) + 4 * (l % 4), &w[m], 4);
  warp_barrier();  // every lane's stores are done before any lane reads the tile
}

// cvt.rn.f16x2.e4m3x2 (sm_89+): two OCP e4m3fn bytes (the lower byte to the lower half) as
// binary16, exactly; 0x7f / 0xff are NaN.
inline uint32_t cvt_f16x2_e4m3x2(uint32_t pair) {
  auto one = [](uint32_t b) -> uint32_t {
    const int sign = (b >> 7) & 1, exp = (b >> 3) & 15, mant = b & 7;
    float v;
    if (exp == 15 && mant == 7) v = std::nanf("");
    else if (exp == 0) v = std::ldexp(static_cast<float>(mant), -9);
    else v = std::ldexp(static_cast<float>(8 + mant), exp - 10);
    const __half h = __float2half_rn(sign ? -v : v);
    return static_cast<__half_raw>(h).x;
  };
  return one(pair & 0xffu) | one((pair >> 8) & 0xffu) << 16;
}

// The lane state of thread t of block b (b = x + grid_x * y) before it runs.
inline void enter_lane(Block& block, int grid_x, int b, int t) {
  LaneState& s = lane_state;
  s.thread = {static_cast<unsigned>(t), 0, 0};
  s.block = {static_cast<unsigned>(b % grid_x), static_cast<unsigned>(b / grid_x), 0};
  s.lane = t % kWarp;
  s.block_state = &block;
  s.warp = block.warps[t / kWarp].get();
  s.open_group.clear();
  s.committed.clear();
}

// Runs kernel() as a grid of grid_x x grid_y blocks of `threads` threads, one block at a time,
// one OS thread per thread; warps are formed from the thread index.
template <typename Kernel>
inline void launch(int grid_x, int threads, Kernel kernel, int grid_y = 1) {
  for (int b = 0; b < grid_x * grid_y; ++b) {
    Block block(threads);
    tfo_emu_common::run_block_threads(
        threads,
        [&](int t) {
          enter_lane(block, grid_x, b, t);
          kernel();
        },
        "warp32");
  }
}

// As launch, with every block of the grid running at once (a cooperative launch: blocks may wait
// for each other), each with its own shared_bytes of dynamic shared memory. A kernel that runs
// this way keeps no __shared__ statics of its own (they would be one variable for all blocks).
template <typename Kernel>
inline void launch_concurrent(int grid_x, int threads, int shared_bytes, Kernel kernel) {
  std::vector<std::unique_ptr<unsigned char[]>> memory;
  std::vector<std::unique_ptr<Block>> blocks;
  for (int b = 0; b < grid_x; ++b) {
    memory.push_back(std::make_unique<unsigned char[]>(static_cast<size_t>(shared_bytes) + 128));
    const uintptr_t at = reinterpret_cast<uintptr_t>(memory.back().get());
    blocks.push_back(std::make_unique<Block>(threads, reinterpret_cast<unsigned char*>((at + 127) / 128 * 128)));
  }
  tfo_emu_common::run_block_threads(
      grid_x * threads,
      [&](int i) {
        enter_lane(*blocks[i / threads], grid_x, i / threads, i % threads);
        kernel();
      },
      "warp32");
}

}  // namespace tfo_emu32

// The CUDA intrinsics the backend uses.
#define threadIdx (::tfo_emu32::lane_state.thread)
#define blockIdx (::tfo_emu32::lane_state.block)

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane) {
  ::tfo_emu32::check_full_mask(mask);
  T all[::tfo_emu32::kWarp];
  ::tfo_emu32::warp_gather(v, all);
  return all[src_lane & 31];
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  ::tfo_emu32::check_full_mask(mask);
  T all[::tfo_emu32::kWarp];
  ::tfo_emu32::warp_gather(v, all);
  return all[(::tfo_emu32::lane_state.lane ^ lane_mask) & 31];
}

inline int __all_sync(unsigned mask, int pred) {
  ::tfo_emu32::check_full_mask(mask);
  int all[::tfo_emu32::kWarp];
  ::tfo_emu32::warp_gather(pred, all);
  for (int p : all) {
    if (!p) return 0;
  }
  return 1;
}

inline void __syncthreads() { ::tfo_emu32::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::tfo_emu32::check_full_mask(mask);
  ::tfo_emu32::warp_barrier();
}
inline float __ldcg(const float* p) { return *p; }
inline float4 __ldcg(const float4* p) { return *p; }
inline size_t __cvta_generic_to_shared(const void* p) { return ::tfo_emu32::shared_offset(p); }
[[noreturn]] inline void __trap() { ::tfo_emu32::fail("__trap"); std::abort(); }
// Byte i of the result is byte (s >> 4i) & 7 of y:x (x holds bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t bytes = static_cast<uint64_t>(y) << 32 | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
}

// TFO_EMU32_ARCH (e.g. 900): take the backend's paths for that architecture (stmatrix on sm_90,
// the e4m3 conversion instruction on sm_89+) instead of the host build's sm_80 ones. Defined
// after the CUDA headers above, whose own code must keep its host paths.
#if defined(TFO_EMU32_ARCH)
#define __CUDA_ARCH__ TFO_EMU32_ARCH
#endif
