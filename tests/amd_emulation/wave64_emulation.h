// Host emulation of the AMD wave64 platform: runs the AMD backend of csrc/hip/gpu_iface (and the
// kernels written on it) on the CPU, so its fragment layouts and cross-lane operations are
// checked against a float64 reference on machines without an AMD GPU.
//
// Include this before any gpu_iface header. It selects the HIP backend (TFO_GPU_HOST_EMULATION),
// makes the kernel attributes plain C++ and maps each __builtin_amdgcn_* the backend uses to a
// function below. A block runs as one OS thread per work-item; the 64 threads of a wave meet at
// a wave barrier for every cross-lane operation (ds_bpermute, DPP, ballot, MFMA), and
// s_barrier is a barrier of the whole block. Shared memory (TFO_SHARED) is a static variable:
// blocks run one after another. MFMA operand and result layouts come from AMD's matrix
// instruction calculator (mfma_layouts.h), not from the backend's own description of them.
//
// Limits: cross-lane operations are reached by all 64 lanes of a full wave (the kernels' waves
// never diverge around them; a block's last, partial wave may not use them); readfirstlane
// returns the calling lane's value (the kernels only apply it to wave-uniform values); a block
// whose work-items do not all finish in time fails (block_threads.h).
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "../emulation_common/block_threads.h"
#include "mfma_layouts.h"

#define TFO_GPU_HOST_EMULATION 1
#define TFO_DEVICE inline
#define TFO_HOST_DEVICE
#define TFO_INLINE inline
#define TFO_GLOBAL
#ifndef TFO_SHARED
#define TFO_SHARED static  // a driver whose kernels declare extern shared arrays defines it empty
#endif
#define TFO_LAUNCH_BOUNDS(max_threads)
#define TFO_MIN_WAVES_PER_SIMD(n)

namespace tfo_emu {

inline constexpr int kWave = 64;

// What the lanes of one wave exchange: each lane's bytes, read by the others between two
// wave barriers.
struct WaveExchange {
  static constexpr int kBytesPerLane = 128;
  explicit WaveExchange(int lanes) : lanes(lanes), barrier(lanes) {}
  int lanes;  // 64, or fewer in the last wave of a block that is not a multiple of 64
  std::barrier<> barrier;
  alignas(16) unsigned char slot[kWave][kBytesPerLane];
};

struct Block {
  explicit Block(int threads) : barrier(threads), waves((threads + kWave - 1) / kWave) {
    for (size_t w = 0; w < waves.size(); ++w) {
      const int lanes = threads - static_cast<int>(w) * kWave;
      waves[w] = std::make_unique<WaveExchange>(lanes < kWave ? lanes : kWave);
    }
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<WaveExchange>> waves;
};

struct LaneState {
  int thread_x = 0, thread_y = 0, block_x = 0, block_y = 0, block_z = 0;
  int lane = 0;
  Block* block = nullptr;
  WaveExchange* wave = nullptr;
};

inline thread_local LaneState lane_state;

inline void fail(const char* what) {
  std::fprintf(stderr, "wave64 emulation: %s\n", what);
  std::abort();
}

inline void wave_barrier() { lane_state.wave->barrier.arrive_and_wait(); }
inline void block_barrier() { lane_state.block->barrier.arrive_and_wait(); }

// Every lane's value of x, in lane order.
template <typename T>
inline void wave_gather(const T& x, T (&all)[kWave]) {
  static_assert(sizeof(T) <= WaveExchange::kBytesPerLane, "exchange slot too small");
  WaveExchange& w = *lane_state.wave;
  if (w.lanes != kWave) fail("cross-lane operation in a partial wave is not emulated");
  std::memcpy(w.slot[lane_state.lane], &x, sizeof(T));
  w.barrier.arrive_and_wait();
  for (int l = 0; l < kWave; ++l) std::memcpy(&all[l], w.slot[l], sizeof(T));
  w.barrier.arrive_and_wait();  // the slots may be reused
}

template <typename T>
inline T read_lane(const T& x, int src_lane) {
  T all[kWave];
  wave_gather(x, all);
  return all[src_lane];
}

// v_mbcnt_lo/hi: src plus the set bits of mask that belong to lower lanes (lo: lanes 0..31).
inline unsigned mbcnt_lo(unsigned mask, unsigned src) {
  const int below = lane_state.lane < 32 ? lane_state.lane : 32;
  const unsigned bits = below == 32 ? mask : (mask & ((1u << below) - 1u));
  return src + static_cast<unsigned>(__builtin_popcount(bits));
}
inline unsigned mbcnt_hi(unsigned mask, unsigned src) {
  const int below = lane_state.lane < 32 ? 0 : lane_state.lane - 32;
  const unsigned bits = below == 0 ? 0u : (mask & ((1u << below) - 1u));
  return src + static_cast<unsigned>(__builtin_popcount(bits));
}

// ds_bpermute_b32: the value of lane (address bits [7:2]).
inline int ds_bpermute(int byte_address, int value) { return read_lane(value, (byte_address >> 2) & 63); }

// DPP with every row and bank enabled: quad_perm (controls 0x00-0xFF), row_mirror (0x140) and
// row_half_mirror (0x141), the controls the backend uses.
inline int update_dpp(int /*old*/, int src, int ctrl, int row_mask, int bank_mask, bool /*bound_ctrl*/) {
  if (row_mask != 0xF || bank_mask != 0xF) fail("DPP with disabled rows or banks is not emulated");
  const int lane = lane_state.lane;
  int from;
  if (ctrl >= 0 && ctrl <= 0xFF) {
    from = (lane & ~3) + ((ctrl >> (2 * (lane & 3))) & 3);
  } else if (ctrl == 0x140) {
    from = (lane & ~15) + (15 - (lane & 15));
  } else if (ctrl == 0x141) {
    from = (lane & ~7) + (7 - (lane & 7));
  } else {
    fail("DPP control not emulated");
    from = lane;
  }
  return read_lane(src, from);
}

inline uint64_t ballot(bool pred) {
  bool all[kWave];
  wave_gather(pred, all);
  uint64_t bits = 0;
  for (int l = 0; l < kWave; ++l) bits |= static_cast<uint64_t>(all[l]) << l;
  return bits;
}

template <typename T>
inline T readfirstlane(T x) {
  return x;
}

inline int32_t atomic_fetch_add(int32_t* p, int32_t v) {
  return std::atomic_ref<int32_t>(*p).fetch_add(v, std::memory_order_seq_cst);
}

inline void atomic_store_word(uint64_t* p, uint64_t w) {
  std::atomic_ref<uint64_t>(*p).store(w, std::memory_order_relaxed);
}
inline uint64_t atomic_load_word(uint64_t* p) { return std::atomic_ref<uint64_t>(*p).load(std::memory_order_relaxed); }

inline float bf16_bits_to_float(short bits) {
  const uint32_t u = static_cast<uint32_t>(static_cast<uint16_t>(bits)) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename V>
inline float element(const V& v, int s) {
  if constexpr (std::is_same_v<std::remove_cvref_t<decltype(v[0])>, short>) {
    return bf16_bits_to_float(v[s]);
  } else {
    return static_cast<float>(v[s]);
  }
}

// D = A B + C for a 16 x K A and a K x 16 B, each lane holding the elements that the layout
// tables give it. Products in float64, rounded once per output element.
template <int K, int kSlots, typename VA, typename VB, typename VC>
inline VC mfma(const VA& a, const VB& b, const VC& c, const unsigned char (&la)[64][kSlots][2],
               const unsigned char (&lb)[64][kSlots][2], const unsigned char (&ld)[64][4][2]) {
  struct Operands {
    float a[kSlots], b[kSlots], c[4];
  } mine, all[kWave];
  for (int s = 0; s < kSlots; ++s) {
    mine.a[s] = element(a, s);
    mine.b[s] = element(b, s);
  }
  for (int s = 0; s < 4; ++s) mine.c[s] = c[s];
  wave_gather(mine, all);
  double A[16][K], B[K][16], C[16][16];
  for (int l = 0; l < kWave; ++l) {
    for (int s = 0; s < kSlots; ++s) {
      A[la[l][s][0]][la[l][s][1]] = all[l].a[s];
      B[lb[l][s][0]][lb[l][s][1]] = all[l].b[s];
    }
    for (int s = 0; s < 4; ++s) C[ld[l][s][0]][ld[l][s][1]] = all[l].c[s];
  }
  VC d;
  for (int s = 0; s < 4; ++s) {
    const int i = ld[lane_state.lane][s][0], j = ld[lane_state.lane][s][1];
    double acc = C[i][j];
    for (int k = 0; k < K; ++k) acc += A[i][k] * B[k][j];
    d[s] = static_cast<float>(acc);
  }
  return d;
}

// Runs kernel() as a grid of grid_x x grid_y blocks of threads_x x threads_y work-items, one
// block at a time, one OS thread per work-item. Waves are formed from the linear work-item index.
template <typename Kernel>
inline void launch(int grid_x, int threads_x, int threads_y, Kernel kernel, int grid_y = 1) {
  const int threads = threads_x * threads_y;
  for (int b = 0; b < grid_x * grid_y; ++b) {
    const int bx = b % grid_x, by = b / grid_x;
    Block block(threads);
    tfo_emu_common::run_block_threads(
        threads,
        [&](int t) {
          LaneState& s = lane_state;
          s.thread_x = t % threads_x;
          s.thread_y = t / threads_x;
          s.block_x = bx;
          s.block_y = by;
          s.lane = t % kWave;
          s.block = &block;
          s.wave = block.waves[t / kWave].get();
          kernel();
        },
        "wave64");
  }
}

}  // namespace tfo_emu

#define __builtin_amdgcn_workitem_id_x() (::tfo_emu::lane_state.thread_x)
#define __builtin_amdgcn_workitem_id_y() (::tfo_emu::lane_state.thread_y)
#define __builtin_amdgcn_workgroup_id_x() (::tfo_emu::lane_state.block_x)
#define __builtin_amdgcn_workgroup_id_y() (::tfo_emu::lane_state.block_y)
#define __builtin_amdgcn_workgroup_id_z() (::tfo_emu::lane_state.block_z)
#define __builtin_amdgcn_mbcnt_lo(mask, src) ::tfo_emu::mbcnt_lo(mask, src)
#define __builtin_amdgcn_mbcnt_hi(mask, src) ::tfo_emu::mbcnt_hi(mask, src)
#define __builtin_amdgcn_readfirstlane(x) ::tfo_emu::readfirstlane(x)
#define __builtin_amdgcn_ds_bpermute(addr, v) ::tfo_emu::ds_bpermute(addr, v)
#define __builtin_amdgcn_update_dpp(old, src, ctrl, row_mask, bank_mask, bound) \
  ::tfo_emu::update_dpp(old, src, ctrl, row_mask, bank_mask, bound)
#define __builtin_amdgcn_ballot_w64(pred) ::tfo_emu::ballot(pred)
#define __builtin_amdgcn_fence(order, scope) std::atomic_thread_fence(std::memory_order_seq_cst)
#define __HIP_MEMORY_SCOPE_AGENT 3
#define __hip_atomic_fetch_add(p, v, order, scope) ::tfo_emu::atomic_fetch_add(p, v)
#define __hip_atomic_store(p, w, order, scope) ::tfo_emu::atomic_store_word(p, w)
#define __hip_atomic_load(p, order, scope) ::tfo_emu::atomic_load_word(p)
#define __builtin_amdgcn_s_barrier() ::tfo_emu::block_barrier()
#define __builtin_amdgcn_wave_barrier() ::tfo_emu::wave_barrier()
#define __builtin_amdgcn_exp2f(x) std::exp2(x)
#define __builtin_amdgcn_rcpf(x) (1.0f / (x))
#define __builtin_amdgcn_logf(x) std::log2(x)
#define __builtin_amdgcn_mfma_f32_16x16x16f16(a, b, c, cbsz, abid, blgp)                    \
  ::tfo_emu::mfma<16>(a, b, c, ::tfo_emu::mfma_layout::k16_f16_a, ::tfo_emu::mfma_layout::k16_f16_b, \
                      ::tfo_emu::mfma_layout::k16_f16_d)
#define __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a, b, c, cbsz, abid, blgp)                      \
  ::tfo_emu::mfma<16>(a, b, c, ::tfo_emu::mfma_layout::k16_bf16_a, ::tfo_emu::mfma_layout::k16_bf16_b, \
                      ::tfo_emu::mfma_layout::k16_bf16_d)
#define __builtin_amdgcn_mfma_f32_16x16x32_f16(a, b, c, cbsz, abid, blgp)                 \
  ::tfo_emu::mfma<32>(a, b, c, ::tfo_emu::mfma_layout::k32_a, ::tfo_emu::mfma_layout::k32_b, \
                      ::tfo_emu::mfma_layout::k32_d)
#define __builtin_amdgcn_mfma_f32_16x16x32_bf16(a, b, c, cbsz, abid, blgp)                \
  ::tfo_emu::mfma<32>(a, b, c, ::tfo_emu::mfma_layout::k32_a, ::tfo_emu::mfma_layout::k32_b, \
                      ::tfo_emu::mfma_layout::k32_d)
