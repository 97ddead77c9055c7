// Probe kernel for the gpu_iface layer until the attention kernels land: one 64x64 tile product
// through shared memory with the fragment interface, then the row maximum and the row sum of
// exp2(c - max) of the accumulator, as an online softmax computes them.
//
//   c[i][j]      = sum_k a[i][k] * B(k, j)        B(k, j) = b[j][k] (kNK) or b[k][j] (kKN)
//   row_max[i]   = max_j c[i][j]
//   row_sum[i]   = sum_j exp2(c[i][j] - row_max[i])
//
// a, b: 64x64 row-major T; c: 64x64 row-major float; one block of kProbeThreads threads.
// Each wave owns a 16-row strip of c: four 16x16 accumulators side by side.
#include "gpu_iface/memory.h"
#include "gpu_iface/mma.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

namespace tfo::kernels {

using namespace tfo::gpu;

enum class BLayout { kNK, kKN };

inline constexpr int kProbeTile = 64;
inline constexpr int kProbeWaves = kProbeTile / 16;
inline constexpr int kProbeThreads = kProbeWaves * kWaveSize;

template <typename T>
struct alignas(128) ProbeSmem {
  T a[kProbeTile * kProbeTile];
  T b[kProbeTile * kProbeTile];
};

template <typename T, BLayout kBLayout, int kMmaK>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kProbeThreads)
    tile_gemm_probe_kernel(const T* a, const T* b, float* c, float* row_max_out,
                           float* row_sum_out) {
  using Tile = SmemTile<T, kProbeTile, kProbeTile>;
  constexpr int kColTiles = kProbeTile / 16;

  TFO_SHARED ProbeSmem<T> smem;
  check_tile_alignment(&smem);
  const Tile a_tile{smem.a};
  const Tile b_tile{smem.b};

  const int thread = thread_index_x();
  copy_tile_global_to_shared<kProbeThreads>(a_tile, a, kProbeTile, thread);
  copy_tile_global_to_shared<kProbeThreads>(b_tile, b, kProbeTile, thread);
  copy_commit_group();
  copy_wait_groups<0>();
  block_sync();

  const int row0 = 16 * wave_index();
  FragC acc[kColTiles] = {};
#pragma unroll
  for (int k0 = 0; k0 < kProbeTile; k0 += kMmaK) {
    FragA<T, kMmaK> a_frag;
    load_a(a_frag, a_tile, row0, k0);
#pragma unroll
    for (int n = 0; n < kColTiles; ++n) {
      FragB<T, kMmaK> b_frag;
      if constexpr (kBLayout == BLayout::kNK) {
        load_b_nk(b_frag, b_tile, 16 * n, k0);
      } else {
        load_b_kn(b_frag, b_tile, k0, 16 * n);
      }
      mma(acc[n], a_frag, b_frag);
    }
  }

  const int lane = lane_id();
#pragma unroll
  for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
    for (int e = 0; e < kAccElems; ++e) {
      c[(row0 + acc_row(lane, e)) * kProbeTile + 16 * n + acc_col(lane, e)] = acc[n].v[e];
    }
  }

  const RowVals row_max_vals = row_max(acc);
#pragma unroll
  for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
    for (int e = 0; e < kAccElems; ++e) {
      acc[n].v[e] = fast_exp2(acc[n].v[e] - row_max_vals.v[acc_row_slot(e)]);
    }
  }
  const RowVals row_sum_vals = row_sum(acc);

  if (lane % kRowLanes == 0) {
#pragma unroll
    for (int s = 0; s < kAccRowsPerLane; ++s) {
      const int row = row0 + acc_slot_row(lane, s);
      row_max_out[row] = row_max_vals.v[s];
      row_sum_out[row] = row_sum_vals.v[s];
    }
  }
}

// The instantiations: both element types, both B layouts, both fragment depths.
template TFO_GLOBAL void tile_gemm_probe_kernel<half_t, BLayout::kNK, 32>(
    const half_t*, const half_t*, float*, float*, float*);
template TFO_GLOBAL void tile_gemm_probe_kernel<bf16_t, BLayout::kNK, 32>(
    const bf16_t*, const bf16_t*, float*, float*, float*);
template TFO_GLOBAL void tile_gemm_probe_kernel<half_t, BLayout::kKN, 16>(
    const half_t*, const half_t*, float*, float*, float*);
template TFO_GLOBAL void tile_gemm_probe_kernel<bf16_t, BLayout::kKN, 16>(
    const bf16_t*, const bf16_t*, float*, float*, float*);

}  // namespace tfo::kernels
