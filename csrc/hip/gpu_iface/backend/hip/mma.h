// AMD CDNA MFMA, 16x16 tiles. Layouts from AMD's matrix instruction calculator
// (-a CDNA3 -i v_mfma_f32_16x16x16_f16 -d, and _bf16); the 16x16x32 layout from the CDNA4 ISA
// guide (the same pattern as CDNA3's v_mfma_f32_16x16x32_fp8_fp8: 8 consecutive k per lane).
//
//   A (16 x K),  element (i, k):  lane = i + 16 * (k / W)   vector slot = k % W    W = K / 4
//   B (K x 16),  element (k, j):  lane = j + 16 * (k / W)   vector slot = k % W
//   C (16 x 16), element (i, j):  lane = j + 16 * (i / 4)   vector slot = i % 4
//
//                  C column j = lane % 16
//     rows  0..3   lanes  0..15    slot = row % 4
//     rows  4..7   lanes 16..31
//     rows  8..11  lanes 32..47
//     rows 12..15  lanes 48..63
//
// A C row lies in 16 consecutive lanes (one DPP row, so row reductions stay in DPP); each lane
// holds 4 rows of one column.
//
// K = 32: each lane loads its 8 consecutive k with one 16-byte LDS read. gfx950 feeds them to one
// v_mfma_f32_16x16x32_{f16,bf16}. gfx942 feeds slots 0..3 and 4..7 to two 16x16x16 MFMAs, which
// read instruction-k 4*(lane/16)+s as k = 8*(lane/16)+s (and +4): the same permutation of k in
// A and B, so the sum over k is unchanged.
#pragma once

namespace tfo::gpu {

template <typename T, int K>
struct FragA {
  static_assert(K == 16 || K == 32, "MFMA fragments cover K = 16 or 32");
  vec_t<T, K / 4> v;
};

template <typename T, int K>
struct FragB {
  static_assert(K == 16 || K == 32, "MFMA fragments cover K = 16 or 32");
  vec_t<T, K / 4> v;
};

struct FragC {
  vec_t<float, 4> v;
};

inline constexpr int kAccElems = 4;
inline constexpr int kAccRowsPerLane = 4;
inline constexpr int kRowLanes = 16;
// A lane's accumulator elements lie in one column (consecutive rows): stores take them singly.
inline constexpr int kAccColRun = 1;

TFO_HOST_DEVICE constexpr int acc_row_slot(int e) { return e; }
TFO_INLINE int acc_row(int lane, int e) { return 4 * (lane / 16) + e; }
TFO_INLINE int acc_col(int lane, int /*e*/) { return lane % 16; }
TFO_INLINE int acc_slot_row(int lane, int slot) { return 4 * (lane / 16) + slot; }
TFO_HOST_DEVICE constexpr int acc_slot_first_row(int slot) { return slot; }

// C to float32 rows: element (i, j) of the tile to dst[at(row0 + i, col0 + j)]. A lane's
// elements lie in one column, so they leave singly; one store covers rows e, e + 4, e + 8,
// e + 12 at 16 columns.
template <typename At>
TFO_INLINE void store_acc_f32(float* dst, const FragC& c, int row0, int col0, const At& at) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < kAccElems; ++e) dst[at(row0 + acc_row(lane, e), col0 + acc_col(lane, e))] = c.v[e];
}

namespace detail {

using f32x4 = vec_t<float, 4>;

TFO_INLINE f32x4 mfma_k16(vec_t<half_t, 4> a, vec_t<half_t, 4> b, f32x4 c) {
  return __builtin_amdgcn_mfma_f32_16x16x16f16(a, b, c, 0, 0, 0);
}

// The bf16 "_1k" builtin takes the bf16 bit patterns as 16-bit integers.
TFO_INLINE f32x4 mfma_k16(vec_t<bf16_t, 4> a, vec_t<bf16_t, 4> b, f32x4 c) {
  return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(__builtin_bit_cast(vec_t<short, 4>, a),
                                                   __builtin_bit_cast(vec_t<short, 4>, b), c, 0, 0,
                                                   0);
}

#if defined(__gfx950__)
TFO_INLINE f32x4 mfma_k32(vec_t<half_t, 8> a, vec_t<half_t, 8> b, f32x4 c) {
  return __builtin_amdgcn_mfma_f32_16x16x32_f16(a, b, c, 0, 0, 0);
}
TFO_INLINE f32x4 mfma_k32(vec_t<bf16_t, 8> a, vec_t<bf16_t, 8> b, f32x4 c) {
  return __builtin_amdgcn_mfma_f32_16x16x32_bf16(a, b, c, 0, 0, 0);
}
#else
template <typename T>
TFO_INLINE f32x4 mfma_k32(vec_t<T, 8> a, vec_t<T, 8> b, f32x4 c) {
  const vec_t<T, 4> a_lo = a.lo, a_hi = a.hi, b_lo = b.lo, b_hi = b.hi;
  return mfma_k16(a_hi, b_hi, mfma_k16(a_lo, b_lo, c));
}
#endif

}  // namespace detail

template <typename T>
TFO_INLINE void mma(FragC& c, const FragA<T, 16>& a, const FragB<T, 16>& b) {
  c.v = detail::mfma_k16(a.v, b.v, c.v);
}

template <typename T>
TFO_INLINE void mma(FragC& c, const FragA<T, 32>& a, const FragB<T, 32>& b) {
  c.v = detail::mfma_k32(a.v, b.v, c.v);
}

// A and Bᵀ stored row-major load alike: lane reads W consecutive k of row (lane % 16).
template <typename T, int K, typename Tile>
TFO_INLINE void load_a(FragA<T, K>& a, const Tile& tile, int row0, int k0) {
  constexpr int W = K / 4;
  const int lane = lane_id();
  a.v = *reinterpret_cast<const vec_t<T, W>*>(tile.ptr(row0 + lane % 16, k0 + W * (lane / 16)));
}

template <typename T, int K, typename Tile>
TFO_INLINE void load_b_nk(FragB<T, K>& b, const Tile& tile, int n0, int k0) {
  constexpr int W = K / 4;
  const int lane = lane_id();
  b.v = *reinterpret_cast<const vec_t<T, W>*>(tile.ptr(n0 + lane % 16, k0 + W * (lane / 16)));
}

// Row-major B: a lane's W values of k are in W different rows, so they are read one by one.
template <typename T, int K, typename Tile>
TFO_INLINE void load_b_kn(FragB<T, K>& b, const Tile& tile, int k0, int n0) {
  constexpr int W = K / 4;
  const int lane = lane_id();
  const int k_first = k0 + W * (lane / 16);
#pragma unroll
  for (int s = 0; s < W; ++s) b.v[s] = *tile.ptr(k_first + s, n0 + lane % 16);
}

// C scaled per row and stored as T into a 16-bit tile: a lane's elements lie in one column, so
// one 16-bit store each.
template <typename T, typename Tile, typename Scales>
TFO_INLINE void store_c(const Tile& tile, int row0, int n0, const FragC& c, const Scales& scale) {
  const int lane = lane_id();
  constexpr int kElems = Tile::kChunkElems;
#pragma unroll
  for (int e = 0; e < kAccElems; ++e) {
    const int col = n0 + acc_col(lane, e);
    *(tile.chunk_ptr_in_block(row0, acc_row(lane, e), col / kElems) + col % kElems) =
        from_float<T>(c.v[e] * scale.v[acc_row_slot(e)]);
  }
}

// An MFMA accumulator lies transposed to an A operand (a lane holds four rows of one column; A
// gives it four k of one row): kernels stage C through shared memory (score.h computes Sᵀ to get
// A's layout instead). Declared for algorithm code that compiles once; a call traps.
inline constexpr bool kAccIsOperandA = false;
template <typename T>
TFO_INLINE void acc_to_operand(FragA<T, 16>&, const FragC&) {
  __builtin_trap();
}

// 8-bit B operands (the NVIDIA backend widens FP8 in registers; here FP8 is widened on its way
// into shared memory). Declared so that algorithm code compiles once: only branches that
// kHas8BitB rules out call them, and a call that got through traps.
inline constexpr bool kHas8BitB = false;
TFO_INLINE int acc_col_8bit_b(int, int) { __builtin_trap(); }
TFO_INLINE void permute_pairs_8bit_b(uint32_t (&)[8]) { __builtin_trap(); }
template <typename At>
TFO_INLINE void store_acc_f32_8bit_b(float*, const FragC&, int, int, const At&) {
  __builtin_trap();
}

// Products of 8 columns with the query heads as columns (the NVIDIA backend's head-column decode
// products). MFMA has no 16 x 8 product: declared for algorithm code that compiles once, and
// only branches that kHasHeadColumns rules out reach them.
inline constexpr bool kHasHeadColumns = false;
struct FragC8 {
  float v[4];
};
inline constexpr int kAcc8Elems = 4;
inline constexpr int kAcc8ColsPerLane = 2;
TFO_INLINE int acc8_row(int, int) { __builtin_trap(); }
TFO_INLINE bool acc8_row0_lane(int) { __builtin_trap(); }
TFO_INLINE int acc8_row0_col(int, int) { __builtin_trap(); }
TFO_INLINE int acc8_col_slot(int) { __builtin_trap(); }
template <typename Op>
TFO_INLINE float acc8_col_allreduce(float, Op) {
  __builtin_trap();
}

}  // namespace tfo::gpu
