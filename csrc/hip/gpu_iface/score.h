// Attention score tiles: S = Q·Kᵀ over 16 x 16 blocks (query rows x kv columns), kept in the
// layout from which the probabilities P become the A operand of P·V without leaving registers.
//
// NVIDIA: the accumulator of S = Q·Kᵀ already has A's layout. AMD: it has B's layout, so the
// backend computes Sᵀ = K·Qᵀ, whose accumulator has A's layout for P. Kernels see only query
// rows and kv columns; which product is formed stays here.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/score.h:
//   score_block<kHeadDim, T, kUnrollAll>(s[R][C], q_tile, q_row0, k_tile, kv_row0)
//       s[i][j] = Q(q_row0 + 16i.., 0..kHeadDim) · K(kv_row0 + 16j.., 0..kHeadDim)ᵀ (overwrites)
//       q_tile, k_tile: [rows][kHeadDim] tiles with T* ptr(row, col) (SmemTile)
//       kUnrollAll: every k step unrolled, where the backend would otherwise keep a loop
//   kScoreRowSumsByMma, RowSums<by_mma>    the softmax denominators (below)
//   kScoreRowsPerLane, score_row_slot(e)   query rows a lane holds; the slot of element e
//   score_row(lane, e), score_col(lane, e) query row / kv column (within 16) of element e
//   score_slot_row(lane, slot)             query row of a slot
//   score_row_leader(lane)                 one lane per set of lanes that share a row
//   ScoreRows, score_row_allreduce(rows, op)  per-row values, completed across lanes
//   score_to_operand<T>(a, s)              P block (16 queries x 16 kv) as FragA<T, 16>
//   acc_rows_from_score_rows(rows)         the same per-row values in the accumulator layout of
//                                          O = P·V (RowVals of mma.h), for rescaling O
#pragma once

#include "gpu_iface/mma.h"

namespace tfo::gpu {

// One value per query row slot of this lane (row maxima, sums, rescale factors).
template <int kSlots>
struct ScoreRowsN {
  float v[kSlots];
};

// The softmax denominators (below); RowSums<true> comes from the backends that have it.
template <bool kByMma>
struct RowSums;

}  // namespace tfo::gpu

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/score.h"
#else
#include "gpu_iface/backend/cuda/score.h"
#endif

namespace tfo::gpu {

using ScoreRows = ScoreRowsN<kScoreRowsPerLane>;

TFO_INLINE ScoreRows score_rows_filled(float x) {
  ScoreRows r;
#pragma unroll
  for (int s = 0; s < kScoreRowsPerLane; ++s) r.v[s] = x;
  return r;
}

// The row sums of P (the softmax denominators l), kept tile by tile:
//   scale(slot, f)       l *= f for the lane's row slot
//   add(slot, p)         one probability of the lane's row slot, as a float
//   add_block<T>(a)      one 16 x 16 block of P as the A operand of P·V
//   total()              the rows' sums, complete across the lanes that share a row
// RowSums<false> adds the floats; RowSums<true> (backends with kScoreRowSumsByMma) multiplies
// the P blocks by a B of ones on the matrix cores, beside P·V, so the exponentials feed no chain
// of float adds (faster only together with score_block's kUnrollAll: docs/kernel_notes.md). A
// kernel calls all four; each variant ignores the call that is not its own.
template <>
struct RowSums<false> {
  ScoreRowsN<kScoreRowsPerLane> sums;
  TFO_INLINE static RowSums zero() {
    RowSums r;
#pragma unroll
    for (int s = 0; s < kScoreRowsPerLane; ++s) r.sums.v[s] = 0.0f;
    return r;
  }
  TFO_INLINE void scale(int slot, float f) { sums.v[slot] *= f; }
  TFO_INLINE void add(int slot, float p) { sums.v[slot] += p; }
  template <typename T, typename FragP>
  TFO_INLINE void add_block(const FragP&) {}
  TFO_INLINE ScoreRowsN<kScoreRowsPerLane> total() const {
    ScoreRowsN<kScoreRowsPerLane> t = sums;
    score_row_allreduce(t, SumOp{});
    return t;
  }
};

// Folds this lane's elements of a row strip of score blocks into its row slots.
template <int N, typename Op>
TFO_INLINE void score_row_fold(const FragC (&s)[N], ScoreRows& rows, Op op) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int e = 0; e < kAccElems; ++e) {
      const int slot = score_row_slot(e);
      rows.v[slot] = op(rows.v[slot], s[n].v[e]);
    }
  }
}

}  // namespace tfo::gpu
