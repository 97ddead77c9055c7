// AMD: Sᵀ = K·Qᵀ. Its accumulator element (kv, q) sits in lane q + 16 (kv / 4), slot kv % 4,
// which is where the A operand of P·V holds P(q, kv): lane q + 16 (k / 4), slot k % 4. So each
// lane holds one query row (lane % 16) and 4 kv columns per block; a row spans lanes
// q, q + 16, q + 32, q + 48. O = P·V keeps mma.h's layout (4 rows per lane), so per-row values
// move to it with one cross-lane read per slot.
#pragma once

namespace tfo::gpu {

inline constexpr int kScoreRowsPerLane = 1;

TFO_HOST_DEVICE constexpr int score_row_slot(int /*e*/) { return 0; }
TFO_INLINE int score_row(int lane, int /*e*/) { return lane % 16; }
TFO_INLINE int score_col(int lane, int e) { return 4 * (lane / 16) + e; }
TFO_INLINE int score_slot_row(int lane, int /*slot*/) { return lane % 16; }
TFO_INLINE bool score_row_leader(int lane) { return lane < 16; }

// A row's scores spread over 4 lanes in the layout of B, not of a matrix-core accumulator's
// rows: the row sums stay float adds (RowSums<false>).
inline constexpr bool kScoreRowSumsByMma = false;

template <typename Op>
TFO_INLINE void score_row_allreduce(ScoreRowsN<kScoreRowsPerLane>& rows, Op op) {
  rows.v[0] = op(rows.v[0], shfl_xor(rows.v[0], 16));
  rows.v[0] = op(rows.v[0], shfl_xor(rows.v[0], 32));
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
#pragma unroll
  for (int d0 = 0; d0 < kHeadDim; d0 += 32) {
    FragB<T, 32> q[R];
#pragma unroll
    for (int i = 0; i < R; ++i) load_b_nk(q[i], q_tile, q_row0 + 16 * i, d0);
#pragma unroll
    for (int j = 0; j < C; ++j) {
      FragA<T, 32> k;
      load_a(k, k_tile, kv_row0 + 16 * j, d0);
#pragma unroll
      for (int i = 0; i < R; ++i) mma(s[i][j], k, q[i]);
    }
  }
}

template <typename T>
TFO_INLINE void score_to_operand(FragA<T, 16>& a, const FragC& s) {
#pragma unroll
  for (int e = 0; e < 4; ++e) a.v[e] = static_cast<T>(s.v[e]);
}

// Slot s of the accumulator layout is row 4 (lane / 16) + s, held by lane 4 (lane / 16) + s here.
TFO_INLINE RowVals acc_rows_from_score_rows(const ScoreRowsN<kScoreRowsPerLane>& rows) {
  RowVals out;
  const int lane = lane_id();
  const int bits = __builtin_bit_cast(int, rows.v[0]);
#pragma unroll
  for (int s = 0; s < kAccRowsPerLane; ++s) {
    const int src_byte_addr = (4 * (lane / 16) + s) << 2;
    out.v[s] = __builtin_bit_cast(float, __builtin_amdgcn_ds_bpermute(src_byte_addr, bits));
  }
  return out;
}

}  // namespace tfo::gpu
