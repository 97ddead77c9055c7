// Matrix-core tiles: operand fragments A (16 x K, row-major) and B (K x 16), float accumulator C
// (16 x 16), for K = 16 or 32 and element types half_t, bf16_t. One wave owns each fragment.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/mma.h (which holds the layout
// diagram):
//   FragA<T, K>, FragB<T, K>, FragC           FragC::v[e] for e < kAccElems
//   mma(c, a, b)                              c += a * b
//   load_a(a, tile, row0, k0)                 A(i, k) = tile(row0 + i, k0 + k)   row-major A (Q)
//   load_b_nk(b, tile, n0, k0)                B(k, j) = tile(n0 + j, k0 + k)     B stored as Bᵀ (K in Q·Kᵀ)
//   load_b_kn(b, tile, k0, n0)                B(k, j) = tile(k0 + k, n0 + j)     row-major B (V)
//     tile: anything with T* ptr(row, col), e.g. SmemTile. Both operands of one mma must come
//     from these loaders (with K = 32 the AMD backend permutes k, identically in A and B).
//   store_c<T>(tile, row0, n0, c, scale)    tile(row0 + i, n0 + j) = T(C(i, j) * scale.v[slot of row i])
//     a 16-bit tile; scale: kAccRowsPerLane floats (RowVals), per acc_row_slot.
//   Accumulator layout, for the softmax:
//     kAccElems                 floats per lane
//     kAccRowsPerLane           distinct tile rows a lane holds ("slots")
//     kRowLanes                 aligned group of consecutive lanes that together hold a row
//     acc_row(lane, e), acc_col(lane, e)   tile coordinates of element e
//     acc_row_slot(e)           the slot element e belongs to
//     acc_slot_row(lane, slot)  the tile row of a slot
//     acc_slot_first_row(slot)  the lowest tile row any lane holds in a slot (constexpr): rows
//                               from n up being padding, slots with acc_slot_first_row >= n hold
//                               nothing but padding in every lane
//   store_acc_f32(dst, c, row0, col0, at)   dst[at(row0 + i, col0 + j)] = C(i, j), float32;
//     at(row, col) must keep a row's 8-column blocks from a multiple of 8 whole (the stores
//     are as wide as the layout's adjacent columns: 8 bytes on NVIDIA, 4 on AMD).
//   Accumulators as A operands, where kAccIsOperandA (NVIDIA: an accumulator's elements lie where
//   A's do, so a product such as P = softmax(Q·Kᵀ) becomes P·V's A operand without leaving
//   registers; AMD's lie transposed, and kernels stage them through shared memory instead):
//     acc_to_operand<T>(a, c)               A(i, k) = T(C(i, k)), FragA<T, 16>, rounded to nearest
//   8-bit B operands, where kHas8BitB (NVIDIA; AMD widens FP8 before its fragments):
//     load_b_nk_8bit(b, raw, n0, k0_bytes, widen), load_b_kn_8bit(b[2], raw, k0, n0_bytes, widen)
//     read a tile of bytes and widen them in registers; the A operand then takes its k in
//     kperm_8bit_b's order (permute_pairs_8bit_b on its rows) and accumulators of
//     load_b_kn_8bit's B hold their columns in acc_col_8bit_b's order, which
//     store_acc_f32_8bit_b stores to their places (16-byte stores). backend/cuda/mma.h has the
//     layouts.
#pragma once

#include "gpu_iface/memory.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/mma.h"
#else
#include "gpu_iface/backend/cuda/mma.h"
#endif

namespace tfo::gpu {

template <typename T>
TFO_INLINE void mma_16x16x16(FragC& c, const FragA<T, 16>& a, const FragB<T, 16>& b) {
  mma(c, a, b);
}
template <typename T>
TFO_INLINE void mma_16x16x32(FragC& c, const FragA<T, 32>& a, const FragB<T, 32>& b) {
  mma(c, a, b);
}

// One value per row slot of this lane: row maxima, row sums, softmax scales.
struct RowVals {
  float v[kAccRowsPerLane];
};

TFO_INLINE RowVals row_vals_filled(float x) {
  RowVals r;
#pragma unroll
  for (int s = 0; s < kAccRowsPerLane; ++s) r.v[s] = x;
  return r;
}

// Folds this lane's accumulator elements of a row strip (N tiles side by side) into its slots.
template <int N, typename Op>
TFO_INLINE void row_fold(const FragC (&acc)[N], RowVals& rows, Op op) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int e = 0; e < kAccElems; ++e) {
      const int s = acc_row_slot(e);
      rows.v[s] = op(rows.v[s], acc[n].v[e]);
    }
  }
}

// Completes per-row partials across the lanes that share each row; every such lane gets the result.
template <typename Op>
TFO_INLINE void row_allreduce(RowVals& rows, Op op) {
#pragma unroll
  for (int s = 0; s < kAccRowsPerLane; ++s) rows.v[s] = group_allreduce<kRowLanes>(rows.v[s], op);
}

template <int N>
TFO_INLINE RowVals row_max(const FragC (&acc)[N]) {
  RowVals rows = row_vals_filled(-__builtin_huge_valf());
  row_fold(acc, rows, MaxOp{});
  row_allreduce(rows, MaxOp{});
  return rows;
}

template <int N>
TFO_INLINE RowVals row_sum(const FragC (&acc)[N]) {
  RowVals rows = row_vals_filled(0.0f);
  row_fold(acc, rows, SumOp{});
  row_allreduce(rows, SumOp{});
  return rows;
}

}  // namespace tfo::gpu
