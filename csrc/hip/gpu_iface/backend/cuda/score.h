// NVIDIA: S = Q·Kᵀ. The accumulator rows of mma.h (g and g + 8 of each lane, 4 lanes per row)
// are the query rows, and its registers pair up into the A operand of P·V:
//   A x[r] = (row g + 8 (r % 2), k 2t + 8 (r / 2) + {0, 1}) = C v[2r], v[2r + 1].
#pragma once

namespace tfo::gpu {

inline constexpr int kScoreRowsPerLane = 2;

TFO_HOST_DEVICE constexpr int score_row_slot(int e) { return (e / 2) % 2; }
TFO_INLINE int score_row(int lane, int e) { return acc_row(lane, e); }
TFO_INLINE int score_col(int lane, int e) { return acc_col(lane, e); }
TFO_INLINE int score_slot_row(int lane, int slot) { return acc_slot_row(lane, slot); }
TFO_INLINE bool score_row_leader(int lane) { return lane % kRowLanes == 0; }

template <typename Op>
TFO_INLINE void score_row_allreduce(ScoreRowsN<kScoreRowsPerLane>& rows, Op op) {
#pragma unroll
  for (int s = 0; s < kScoreRowsPerLane; ++s) rows.v[s] = group_allreduce<kRowLanes>(rows.v[s], op);
}

template <int kHeadDim, typename T, bool kUnrollAll = false, int R, int C, typename QTile, typename KTile>
TFO_INLINE void score_block(FragC (&s)[R][C], const QTile& q_tile, int q_row0, const KTile& k_tile,
                            int kv_row0) {
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int j = 0; j < C; ++j) {
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) s[i][j].v[e] = 0.0f;
    }
  }
  // With two row fragments, k steps of 16 keep fewer fragments live (O fills the registers);
  // at head_dim 256 the steps stay a loop, so that no more fragments are fetched ahead (four
  // steps per trip with 64-row K/V tiles: fewer loop values spill than with one or two). Head dim
  // 128 with 64-row K/V tiles (64 S registers beside 128 of O) runs them two at a time for the
  // same reason (fully unrolled, the fragments fetched ahead push the loop's state into spills),
  // unless the kernel asks for every step (kUnrollAll): the loop's trips (uniform-datapath
  // address math, a branch, and the first products of each trip waiting for their fragments)
  // cost more than the few values a full unroll spills, in the single-request kernels.
  constexpr int kStep = R > 1 ? 16 : 32;
  constexpr int kUnroll =
      kHeadDim >= 256 ? (C >= 4 ? 4 : 1) : (kHeadDim == 128 && R > 1 && C >= 4 && !kUnrollAll ? 2 : kHeadDim / kStep);
#pragma unroll(kUnroll)
  for (int d0 = 0; d0 < kHeadDim; d0 += kStep) {
    FragA<T, kStep> q[R];
#pragma unroll
    for (int i = 0; i < R; ++i) load_a(q[i], q_tile, q_row0 + 16 * i, d0);
#pragma unroll
    for (int j = 0; j < C; ++j) {
      FragB<T, kStep> k;
      load_b_nk(k, k_tile, kv_row0 + 16 * j, d0);
#pragma unroll
      for (int i = 0; i < R; ++i) mma(s[i][j], q[i], k);
    }
  }
}

template <typename T>
TFO_INLINE void score_to_operand(FragA<T, 16>& a, const FragC& s) {
  acc_to_operand<T>(a, s);  // S = Q·Kᵀ is an accumulator here (mma.h)
}

// Row sums on the tensor cores: one m16n8k16 of a P block against a B of ones adds the block's
// row sums to every column of an accumulator, so each lane holds its two rows' whole sums
// (v[0] = v[1]: row g, v[2] = v[3]: row g + 8) and total() needs no cross-lane step. P enters as
// the rounded 16-bit operand that P·V multiplies, so l sums what O accumulates.
inline constexpr bool kScoreRowSumsByMma = true;

template <>
struct RowSums<true> {
  float acc[4];
  TFO_INLINE static RowSums zero() { return RowSums{{0.0f, 0.0f, 0.0f, 0.0f}}; }
  TFO_INLINE void scale(int slot, float f) {
    acc[2 * slot] *= f;
    acc[2 * slot + 1] *= f;
  }
  TFO_INLINE void add(int, float) {}
  template <typename T>
  TFO_INLINE void add_block(const FragA<T, 16>& p) {
    constexpr uint32_t kOnes = std::is_same_v<T, half_t> ? 0x3c003c00u : 0x3f803f80u;  // (1, 1)
    detail::mma_m16n8k16<T>(acc, p.x, kOnes, kOnes);
  }
  TFO_INLINE ScoreRowsN<kScoreRowsPerLane> total() const { return {{acc[0], acc[2]}}; }
};

// O's rows are S's rows: nothing moves.
TFO_INLINE RowVals acc_rows_from_score_rows(const ScoreRowsN<kScoreRowsPerLane>& rows) {
  RowVals out;
#pragma unroll
  for (int s = 0; s < kAccRowsPerLane; ++s) out.v[s] = rows.v[s];
  return out;
}

}  // namespace tfo::gpu
