// NVIDIA mma.sync.aligned.m16n8k16 (sm_80+). A 16x16x16 step is two of them: columns 0..7 (h = 0)
// and 8..15 (h = 1). Layouts from the PTX ISA, "Matrix Fragments for mma.m16n8k16";
// g = lane / 4, t = lane % 4. Each 32-bit register holds 2 elements, lower k (or column) first.
//
//   A (16 x 16)  x[r]:      row g + 8 * (r % 2),  k = 2t + 8 * (r / 2) + {0, 1}
//   B (16 x 16)  x[2h + r]: column 8h + g,        k = 2t + 8r + {0, 1}
//   C (16 x 16)  v[4h + i]: row g + 8 * (i / 2),  column 8h + 2t + i % 2
//
//                 columns 8h+2t, 8h+2t+1
//     row g       v[4h],   v[4h+1]
//     row g + 8   v[4h+2], v[4h+3]
//
// A C row lies in the 4 lanes of a group; each lane holds 2 rows. Every register above is one
// 8x8 matrix of ldmatrix (.trans for row-major B), which is how the fragments are loaded.
// K = 32 fragments are two K = 16 fragments back to back. The loaders take tile offsets (row0,
// n0, k0) that are multiples of 16, as every caller's are.
#pragma once

#include <type_traits>

namespace tfo::gpu {

template <typename T, int K>
struct FragA {
  static_assert(K == 16 || K == 32, "fragments cover K = 16 or 32");
  uint32_t x[K / 4];
};

template <typename T, int K>
struct FragB {
  static_assert(K == 16 || K == 32, "fragments cover K = 16 or 32");
  uint32_t x[K / 4];
};

struct FragC {
  float v[8];
};

inline constexpr int kAccElems = 8;
inline constexpr int kAccRowsPerLane = 2;
inline constexpr int kRowLanes = 4;
// Accumulator elements 2k and 2k + 1 of a lane are adjacent columns of one row: stores can
// take them as one pair.
inline constexpr int kAccColRun = 2;

TFO_HOST_DEVICE constexpr int acc_row_slot(int e) { return (e / 2) % 2; }
TFO_INLINE int acc_row(int lane, int e) { return lane / 4 + 8 * ((e / 2) % 2); }
TFO_INLINE int acc_col(int lane, int e) { return 8 * (e / 4) + 2 * (lane % 4) + e % 2; }
TFO_INLINE int acc_slot_row(int lane, int slot) { return lane / 4 + 8 * slot; }
TFO_HOST_DEVICE constexpr int acc_slot_first_row(int slot) { return 8 * slot; }

namespace detail {
// Vector stores to shared memory, written out: through a cast to an aligned struct the compiler
// split some of them (those it could not prove aligned) into 4-byte stores.
TFO_INLINE void store_shared_f32x2(float* p, float x0, float x1) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  p[0] = x0;
  p[1] = x1;
#else
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(shared_address(p)), "f"(x0), "f"(x1) : "memory");
#endif
}
TFO_INLINE void store_shared_f32x4(float* p, float x0, float x1, float x2, float x3) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  p[0] = x0;
  p[1] = x1;
  p[2] = x2;
  p[3] = x3;
#else
  asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(shared_address(p)), "f"(x0), "f"(x1),
               "f"(x2), "f"(x3)
               : "memory");
#endif
}
}  // namespace detail

// C to float32 rows in shared memory: element (i, j) of the tile to dst[at(row0 + i, col0 + j)],
// where at keeps a row's 8-column blocks from a multiple of 8 whole. Each lane's column pairs
// leave as 8-byte stores; a half warp's store covers rows g..g+3 (g % 4 == 0) at one 32-byte
// block.
template <typename At>
TFO_INLINE void store_acc_f32(float* dst, const FragC& c, int row0, int col0, const At& at) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < kAccElems; e += 2) {
    detail::store_shared_f32x2(dst + at(row0 + acc_row(lane, e), col0 + acc_col(lane, e)), c.v[e], c.v[e + 1]);
  }
}

namespace detail {

#if defined(TFO_GPU_HOST_EMULATION_CUDA)
template <typename T>
TFO_INLINE void mma_m16n8k16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  tfo_emu32::mma_m16n8k16<T>(c, a, b0, b1);
}
TFO_INLINE void ldmatrix_x4(uint32_t* r, uint32_t address) { tfo_emu32::ldmatrix_x4(r, address, false); }
TFO_INLINE void ldmatrix_x4_trans(uint32_t* r, uint32_t address) { tfo_emu32::ldmatrix_x4(r, address, true); }
TFO_INLINE void ldmatrix_x4(uint32_t* r, const void* smem_row) { ldmatrix_x4(r, shared_address(smem_row)); }
TFO_INLINE void ldmatrix_x4_trans(uint32_t* r, const void* smem_row) { ldmatrix_x4_trans(r, shared_address(smem_row)); }
#else
template <typename T>
TFO_INLINE void mma_m16n8k16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, half_t>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, bf16_t>, "mma: half_t or bf16_t");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Lanes 8m..8m+7 give the row addresses of matrix m; register m receives matrix m.
TFO_INLINE void ldmatrix_x4(uint32_t* r, const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
}

TFO_INLINE void ldmatrix_x4_trans(uint32_t* r, const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
}

TFO_INLINE void ldmatrix_x4(uint32_t* r, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

TFO_INLINE void ldmatrix_x4_trans(uint32_t* r, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
#endif

// Fragment row addresses in a swizzled tile whose rows hold at least 8 chunks (the XOR swizzle
// then permutes the chunks of each 128-byte line by row % 8). A lane's base address carries its
// row and its chunk of the first line: with the tile 128-byte aligned (check_tile_alignment) its
// low 7 bits are that chunk's byte offset, so the chunk of column byte c is base ^ (c % 128)
// plus c - c % 128 -- one XOR with an immediate per fragment, the rest an immediate offset.
template <typename Tile>
inline constexpr bool kXorAddressed = Tile::kChunksPerRow >= 8;

template <typename Tile>
TFO_INLINE uint32_t lane_fragment_base(const Tile& tile, int lane_row, int lane_half) {
  constexpr int kRowBytes = Tile::kChunksPerRow * 16;
  return shared_address(tile.data) + lane_row * kRowBytes + (((lane_half ^ lane_row) & 7) << 4);
}

template <typename Tile>
TFO_INLINE uint32_t fragment_address(uint32_t lane_base, int row0, int col_byte) {
  constexpr int kRowBytes = Tile::kChunksPerRow * 16;
  return (lane_base ^ static_cast<uint32_t>(col_byte & 127)) + (col_byte & ~127) + row0 * kRowBytes;
}

}  // namespace detail

template <typename T, int K>
TFO_INLINE void mma(FragC& c, const FragA<T, K>& a, const FragB<T, K>& b) {
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      detail::mma_m16n8k16<T>(&c.v[4 * h], &a.x[4 * kb], b.x[4 * kb + 2 * h],
                              b.x[4 * kb + 2 * h + 1]);
    }
  }
}

// Matrix m = lane / 8 is rows 8 * (m % 2).., k 8 * (m / 2)..
template <typename T, int K, typename Tile>
TFO_INLINE void load_a(FragA<T, K>& a, const Tile& tile, int row0, int k0) {
  const int lane = lane_id();
  if constexpr (detail::kXorAddressed<Tile>) {
    const uint32_t base = detail::lane_fragment_base(tile, lane % 16, lane / 16);
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      detail::ldmatrix_x4(&a.x[4 * kb], detail::fragment_address<Tile>(base, row0, (k0 + 16 * kb) * 2));
    }
  } else {
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      // k0 + 16 kb is a multiple of 16: its chunk index is even, so "| (lane / 16)" adds the
      // lane's half, in a form that merges with the swizzle's XOR.
      const int chunk = (k0 + 16 * kb) / 8 | (lane / 16);
      detail::ldmatrix_x4(&a.x[4 * kb], tile.chunk_ptr_in_block(row0, lane % 16, chunk));
    }
  }
}

// Bᵀ stored row-major ([n][k]): matrix m = 2h + r is columns 8h.., k 8r..
template <typename T, int K, typename Tile>
TFO_INLINE void load_b_nk(FragB<T, K>& b, const Tile& tile, int n0, int k0) {
  const int lane = lane_id();
  const int n = 8 * (lane / 16) + lane % 8;
  if constexpr (detail::kXorAddressed<Tile>) {
    const uint32_t base = detail::lane_fragment_base(tile, n, (lane / 8) % 2);
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      detail::ldmatrix_x4(&b.x[4 * kb], detail::fragment_address<Tile>(base, n0, (k0 + 16 * kb) * 2));
    }
  } else {
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      const int chunk = (k0 + 16 * kb) / 8 | ((lane / 8) % 2);
      detail::ldmatrix_x4(&b.x[4 * kb], tile.chunk_ptr_in_block(n0, n, chunk));
    }
  }
}

// B stored row-major ([k][n]): the same matrices, transposed on the way in.
template <typename T, int K, typename Tile>
TFO_INLINE void load_b_kn(FragB<T, K>& b, const Tile& tile, int k0, int n0) {
  const int lane = lane_id();
  if constexpr (detail::kXorAddressed<Tile>) {
    const uint32_t base = detail::lane_fragment_base(tile, lane % 16, lane / 16);
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      detail::ldmatrix_x4_trans(&b.x[4 * kb], detail::fragment_address<Tile>(base, k0 + 16 * kb, n0 * 2));
    }
  } else {
    const int chunk = n0 / 8 | (lane / 16);
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      detail::ldmatrix_x4_trans(&b.x[4 * kb], tile.chunk_ptr_in_block(k0 + 16 * kb, lane % 16, chunk));
    }
  }
}

// C scaled per row and stored as T into a 16-bit tile. sm_90: one stmatrix.x4 per fragment, whose
// matrix m = lane / 8 takes the rows and columns load_a's matrix m reads (register m: v[2m],
// v[2m + 1] of the C layout above), so its addresses are load_a's. Before sm_90: a 32-bit store
// per adjacent column pair.
template <typename T, typename Tile, typename Scales>
TFO_INLINE void store_c(const Tile& tile, int row0, int n0, const FragC& c, const Scales& scale) {
  const int lane = opaque_int(lane_id());
  uint32_t w[4];
#pragma unroll
  for (int m = 0; m < 4; ++m) w[m] = pack2<T>(c.v[2 * m] * scale.v[m % 2], c.v[2 * m + 1] * scale.v[m % 2]);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t address;
  if constexpr (detail::kXorAddressed<Tile>) {
    address = detail::fragment_address<Tile>(detail::lane_fragment_base(tile, lane % 16, lane / 16), row0, n0 * 2);
  } else {
    address = shared_address(tile.chunk_ptr_in_block(row0, lane % 16, n0 / 8 | (lane / 16)));
  }
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  tfo_emu32::stmatrix_x4(address, w);
#else
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(w[0]),
               "r"(w[1]), "r"(w[2]), "r"(w[3])
               : "memory");
#endif
#else
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    *reinterpret_cast<uint32_t*>(tile.ptr(row0 + lane / 4 + 8 * (m % 2), n0 + 8 * (m / 2) + 2 * (lane % 4))) = w[m];
  }
#endif
}

// 8-bit B operands (FP8 K/V caches), widened to binary16 in registers. The tile holds the bytes
// as stored and is read by the loaders above as 16-bit pairs (Tile = SmemTile<half_t, rows,
// bytes / 2>, swizzled like any tile); `widen` turns a 32-bit register of bytes e0..e3 into two
// pairs of the fragment's T:  widen.pairs(w, lo, hi): lo = (e0, e1), hi = (e2, e3);
//                  widen.strided(w, lo, hi): lo = (e0, e2), hi = (e1, e3).
// No shared-memory round trip and no barrier between the bytes landing and the mma.
//
// load_b_nk_8bit (Bᵀ stored [n][k], 32 k bytes from k0): lane register x[2h + r] of a 16-bit
// load holds bytes k0 + 16r + 4t .. + 3 of column 8h + g, i.e. k = 2t, 2t + 1 (pairs' lo) and
// 8 + 2t, 9 + 2t (hi) of a k16 block whose k runs over the block's bytes in the order
// kperm_8bit_b: 0 1 4 5 8 9 12 13 2 3 6 7 10 11 14 15. The A operand must take its k in that
// order too: permute_pairs_8bit_b reorders the 8 element pairs of each 16-element block of an A
// row (before load_a) so that A(i, k) = row(i, 16 kb + kperm_8bit_b(k % 16)).
//
// load_b_kn_8bit (B stored [k][n], 32 byte columns from n0; 16 k rows from k0): the transposed
// 16-bit load gives lane register x[2h + r] the bytes (k, c), (k, c + 1), (k + 1, c), (k + 1, c + 1)
// for k = k0 + 2t + 8r, c = n0 + 16h + 2g; the strided pairs split them by column parity. So
// fragment h holds byte columns n0 + 16h + 2j + p as its column 8p + j (even columns, then odd),
// and element e of an accumulator of it lies at column acc_col_8bit_b(lane, e) of those 16.
inline constexpr bool kHas8BitB = true;

TFO_HOST_DEVICE constexpr int kperm_8bit_b(int k) { return 4 * (k % 8 / 2) + 2 * (k / 8) + k % 2; }

TFO_INLINE int acc_col_8bit_b(int lane, int e) { return 4 * (lane % 4) + 2 * (e % 2) + e / 4; }

// An accumulator's element pairs (v[2r], v[2r + 1]: row g + 8 (r % 2), columns 8 (r / 2) + 2t,
// + 1) are A's registers x[r] (the same rows and k), so C becomes an A operand in place.
inline constexpr bool kAccIsOperandA = true;
template <typename T>
TFO_INLINE void acc_to_operand(FragA<T, 16>& a, const FragC& c) {
#pragma unroll
  for (int r = 0; r < 4; ++r) a.x[r] = pack2<T>(c.v[2 * r], c.v[2 * r + 1]);
}

// store_acc_f32 for accumulators of load_b_kn_8bit's B: row g + 8r of a lane holds columns 4t ..
// 4t + 3 in v[2r], v[2r + 4], v[2r + 1], v[2r + 5] (acc_col_8bit_b), one 16-byte store each; a
// quarter warp's store covers rows g, g + 1 (g even) at one 64-byte pair of blocks.
template <typename At>
TFO_INLINE void store_acc_f32_8bit_b(float* dst, const FragC& c, int row0, int col0, const At& at) {
  const int lane = lane_id();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    detail::store_shared_f32x4(dst + at(row0 + lane / 4 + 8 * r, col0 + 4 * (lane % 4)), c.v[2 * r],
                               c.v[2 * r + 4], c.v[2 * r + 1], c.v[2 * r + 5]);
  }
}

TFO_INLINE void permute_pairs_8bit_b(uint32_t (&w)[8]) {
  const uint32_t in[8] = {w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]};
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    w[p] = in[2 * p];
    w[4 + p] = in[2 * p + 1];
  }
}

template <typename T, typename Tile, typename Widen>
TFO_INLINE void load_b_nk_8bit(FragB<T, 32>& b, const Tile& tile, int n0, int k0_bytes, const Widen& widen) {
  FragB<half_t, 16> raw;
  load_b_nk(raw, tile, n0, k0_bytes / 2);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int h = 0; h < 2; ++h) widen.pairs(raw.x[2 * h + r], b.x[4 * r + 2 * h], b.x[4 * r + 2 * h + 1]);
  }
}

template <typename T, typename Tile, typename Widen>
TFO_INLINE void load_b_kn_8bit(FragB<T, 16> (&b)[2], const Tile& tile, int k0, int n0_bytes, const Widen& widen) {
  FragB<half_t, 16> raw;
  load_b_kn(raw, tile, k0, n0_bytes / 2);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int r = 0; r < 2; ++r) widen.strided(raw.x[2 * h + r], b[h].x[r], b[h].x[2 + r]);
  }
}

// Products of 8 columns (one mma.m16n8k16), where kHasHeadColumns: a decode tile whose columns
// are a GQA group's query heads (Sᵀ = K Qᵀ, Oᵀ = Vᵀ Pᵀ) holds no padding rows of a 16-row tile.
//
//   FragC8 (16 x 8)  v[i]: row g + 8 (i / 2), column 2t + i % 2 (the left half of a FragC)
//   B of 8 columns   b[0]: k 2t + {0, 1}, b[1]: k 8 + 2t + {0, 1}, column g
//
// A lane's column lies in the 8 lanes of equal t (acc8_col_allreduce); an 8-bit B fragment read
// transposed is an A fragment (the same registers, reordered: operand_a_of_b), and an
// accumulator's 8 x 8 halves transposed in registers (movmatrix) are the B operand of the next
// product (acc8_to_operand_b).
inline constexpr bool kHasHeadColumns = true;

struct FragC8 {
  float v[4];
};
inline constexpr int kAcc8Elems = 4;
inline constexpr int kAcc8ColsPerLane = 2;  // column slot c: elements c and c + 2 (rows g, g + 8)
// Element e's row. Row 0 lies in lanes 0-3 (acc8_row0_lane), whose column slot c is column
// acc8_row0_col(lane, c).
TFO_INLINE int acc8_row(int lane, int e) { return lane / 4 + 8 * (e / 2); }
TFO_INLINE bool acc8_row0_lane(int lane) { return lane < 4; }
TFO_INLINE int acc8_row0_col(int lane, int c) { return 2 * lane + c; }
// Element e's column slot.
TFO_INLINE int acc8_col_slot(int e) { return e % kAcc8ColsPerLane; }

template <typename T>
TFO_INLINE void mma_16x8x16(FragC8& c, const FragA<T, 16>& a, uint32_t b0, uint32_t b1) {
  detail::mma_m16n8k16<T>(c.v, a.x, b0, b1);
}

// Completes per-column partials across the 8 lanes that share each column.
template <typename Op>
TFO_INLINE float acc8_col_allreduce(float v, Op op) {  // (lanes of equal lane % 4)
#pragma unroll
  for (int mask = 4; mask < 32; mask <<= 1) v = op(v, shfl_xor(v, mask));
  return v;
}

// Bᵀ as an A operand: a 16 x 16 B fragment (x[2h + r]: column 8h + g, k 2t + 8r) holds what the
// A fragment of its transpose holds (x[r]: row g + 8 (r % 2), k 2t + 8 (r / 2)), in another order.
template <typename T>
TFO_INLINE FragA<T, 16> operand_a_of_b(const uint32_t* b) {
  FragA<T, 16> a;
  a.x[0] = b[0];
  a.x[1] = b[2];
  a.x[2] = b[1];
  a.x[3] = b[3];
  return a;
}

// Rows n0 .. n0 + 7 of a tile stored [n][k] as the B operands of 8 columns for k0 .. k0 + 31
// (b[2 kb + r]: k block kb), one ldmatrix.x4: lanes 8m .. 8m + 7 address matrix m, k block m / 2.
template <typename T, typename Tile>
TFO_INLINE void load_b8_nk(uint32_t (&b)[4], const Tile& tile, int n0, int k0) {
  const int lane = lane_id();
  detail::ldmatrix_x4(b, tile.chunk_ptr(n0 + lane % 8, k0 / 8 + lane / 8));
}

// The A operands of 16 rows of an 8-bit tile ([rows][bytes]), 32 k bytes from k0_bytes as two k
// blocks, k in kperm_8bit_b's order (load_b_nk_8bit read transposed).
template <typename T, typename Tile, typename Widen>
TFO_INLINE void load_a_8bit(FragA<T, 16> (&a)[2], const Tile& tile, int row0, int k0_bytes, const Widen& widen) {
  FragB<T, 32> b;
  load_b_nk_8bit(b, tile, row0, k0_bytes, widen);
  a[0] = operand_a_of_b<T>(&b.x[0]);
  a[1] = operand_a_of_b<T>(&b.x[4]);
}

// The A operands of the transpose of 16 rows of an 8-bit tile ([k][bytes]: V read as Vᵀ), 32
// byte columns from n0_bytes: a[h] row 8p + j is byte column n0_bytes + 16h + 2j + p
// (load_b_kn_8bit read transposed).
template <typename T, typename Tile, typename Widen>
TFO_INLINE void load_a_8bit_t(FragA<T, 16> (&a)[2], const Tile& tile, int k0, int n0_bytes, const Widen& widen) {
  FragB<T, 16> b[2];
  load_b_kn_8bit(b, tile, k0, n0_bytes, widen);
  a[0] = operand_a_of_b<T>(b[0].x);
  a[1] = operand_a_of_b<T>(b[1].x);
}

namespace detail {
TFO_INLINE uint32_t movmatrix_trans(uint32_t x) {
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  return tfo_emu32::movmatrix_trans(x);
#else
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
#endif
}
}  // namespace detail

// B(k, j) = T(C(k, j)): a 16 x 8 accumulator as the B operand of the next product, its two 8 x 8
// halves transposed in registers.
template <typename T>
TFO_INLINE void acc8_to_operand_b(uint32_t (&b)[2], const FragC8& c) {
  b[0] = detail::movmatrix_trans(pack2<T>(c.v[0], c.v[1]));
  b[1] = detail::movmatrix_trans(pack2<T>(c.v[2], c.v[3]));
}

// An accumulator of load_a_8bit_t's A (16 rows: 16 byte columns from col0 in that order; 8
// columns) stored transposed as float32: dst[at(row0 + j, col0 + c)] for its column j and byte
// column c. A lane's two rows (byte columns col0 + 2g, + 1) are adjacent: one 8-byte store a
// column.
template <typename At>
TFO_INLINE void store_acc8_f32_t_8bit(float* dst, const FragC8& c, int row0, int col0, const At& at) {
  const int lane = lane_id();
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    detail::store_shared_f32x2(dst + at(row0 + 2 * (lane % 4) + j, col0 + 2 * (lane / 4)), c.v[j], c.v[2 + j]);
  }
}

}  // namespace tfo::gpu
