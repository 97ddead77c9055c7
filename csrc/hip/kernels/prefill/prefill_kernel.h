// FlashAttention-2-style prefill: one CTA takes a tile of query rows of one kv head (the rows of
// every query head of the GQA group, packed as row = token * group + head_in_group) and streams
// the request's K/V through shared memory in tiles of kKvTile rows, with an online softmax in
// fp32, base 2. Each wave owns kRowFrags x 16 rows. NVIDIA double-buffers K and V (cp.async):
//
//   Q, K0, V0 -> | wait, sync | K_j+1, V_j+1 -> | S = Q K_jᵀ, softmax, O += P V_j |
//
// AMD has one buffer each; the (synchronous) load of one goes between the products:
//
//   Q, K0 ->  | wait, sync | V_j -> | S = Q K_jᵀ, softmax | wait, sync | K_j+1 -> | O += P V_j |
//
// Work units: single-request launches take one q tile per block (grid = kv heads x q tiles,
// heaviest causal tiles first), or one kv chunk of a q tile (csrc/include/single_prefill_split.h);
// batch launches run a persistent grid over the plan's items
// (csrc/include/plan_info.h) x kv heads x row chunks, each block in the order of its work list
// from the plan, read on the device, so a captured graph replays any later plan. Items that are
// one split of a request write float32 partial rows; merge_partials_kernel (prefill_merge.h)
// combines them afterwards, as the CPU path does. Tile shapes: prefill_policy.h.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../../../include/plan_info.h"
#include "../../../include/single_prefill_split.h"
#include "../kernel_variants.h"
#include "../online_softmax.h"
#include "gpu_iface/memory.h"
#include "gpu_iface/mma.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/score.h"
#include "gpu_iface/vec_types.h"
#include "packed_rows.h"
#include "prefill_params.h"
#include "prefill_policy.h"

namespace tfo::kernels::prefill {

using namespace tfo::gpu;

struct alignas(16) Chunk16 {
  uint32_t w[4];
};

TFO_INLINE int ceil_div(int a, int b) { return (a + b - 1) / b; }
TFO_INLINE int min_int(int a, int b) { return a < b ? a : b; }
TFO_INLINE int max_int(int a, int b) { return a > b ? a : b; }

// Element offset of kv row `pos` of one request and kv head, in K and in V (which share their
// strides): the only place where paged and contiguous K/V differ.
template <bool kPaged>
struct KvAddress {
  const int32_t* pages;  // paged: the request's page ids
  int token_base;        // contiguous: the request's first token
  PageDivisor page_div;
  int stride_page, stride_token, head_offset;

  TFO_INLINE int64_t operator()(int pos) const {
    if constexpr (kPaged) {
      const PageSlot at = page_slot(pos, page_div);
      return static_cast<int64_t>(pages[at.page]) * stride_page + at.slot * stride_token +
             head_offset;
    } else {
      return static_cast<int64_t>(token_base + pos) * stride_token + head_offset;
    }
  }
};

// Query rows [row_begin, row_end) (packed, within the request) against kv [kv_begin, kv_end).
struct WorkUnit {
  int request;
  int row_begin, row_end;
  int kv_begin, kv_end;
  int kv_head;
  int partial_row;  // -1: write o; else the partial row of token q_begin
  int q_begin;
};

// A single-request block's unit (single_prefill_split.h): the grid is (kv heads, units), and
// the scheduler starts blocks x first, so every head's longest tiles start first; unit u =
// blockIdx.y + kSingleGridRows * blockIdx.z (y alone holds at most 65535) -> q tile
// tiles - 1 - u / splits, kv chunk u % splits. Without kSplitKv every tile is one chunk.
inline constexpr int kSingleGridRows = 65535;

struct SingleUnit {
  int tile, kv_head, chunk, chunks;  // chunk >= chunks: no work (past the last chunk or tile)
  flashinfer_ops::single_split::KvRange range;  // the tile's kv range (set when split)
};

// A single-request launch's tile geometry for single_prefill_split.h, the one place that says a
// custom mask replaces the causal bound there (every single-request kernel serves custom masks):
// the launch's split choice, the kernel's chunks and the merge all derive from it.
// group: num_qo_heads / num_kv_heads.
TFO_HOST_DEVICE inline flashinfer_ops::single_split::Geometry single_geometry(const PrefillParams& p, int group,
                                                                              int tile_rows, int kv_tile) {
  return {p.qo_len, p.kv_len, group, tile_rows, kv_tile, p.causal && p.custom_mask == nullptr, p.window_left};
}

template <typename Policy, bool kSplitKv>
TFO_INLINE SingleUnit single_unit(const PrefillParams& p, int group, int unit) {
  namespace ss = flashinfer_ops::single_split;
  const int tiles = ceil_div(p.qo_len * group, Policy::kTileRows);
  const int splits = kSplitKv ? p.kv_splits : 1;
  const int order = kSplitKv ? unit / splits : unit;
  SingleUnit su{tiles - 1 - order, block_index_x(), unit - order * splits, 1, {0, 0}};
  if constexpr (kSplitKv) {
    static_assert(Policy::kCustomMask, "single_geometry: single-request kernels serve custom masks");
    su.range = ss::tile_kv_range(single_geometry(p, group, Policy::kTileRows, Policy::kKvTile), su.tile);
    su.chunks = ss::tile_chunks(ss::range_tiles(su.range, Policy::kKvTile), p.kv_chunk_tiles);
  }
  if (su.tile < 0) su.chunk = su.chunks;
  return su;
}

// kTransformScores: the scores go through a soft cap (or a non-positive scale) before the
// softmax; a separate instantiation, so that the common kernel carries none of that code (if
// converted, it would cost issue slots on every tile).
template <typename T, int kHeadDim, bool kPaged, bool kPlanned, bool kTransformScores, bool kMasked, bool kSplitKv,
          bool kFewTiles>
TFO_DEVICE void run_unit(const PrefillParams& p, const WorkUnit& u, int group, uint8_t* smem) {
  using Policy = PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>;
  constexpr int R = Policy::kRowFrags;
  constexpr int C = Policy::kKvTile / 16;
  constexpr int DF = kHeadDim / 16;  // O column fragments
  constexpr int kThreads = Policy::kThreads;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  using QTile = SmemTile<T, Policy::kTileRows, kHeadDim>;
  using KvTile = SmemTile<T, Policy::kKvTile, kHeadDim>;
  static_assert(Policy::kTileRows * kChunks % kThreads == 0, "Q tile copy");
  static_assert(Policy::kKvTile * kChunks % kThreads == 0, "K/V tile copy");

  T* smem_elems = reinterpret_cast<T*>(smem);
  const QTile q_tile{smem_elems};
  constexpr int kStages = Policy::kKvStages;
  constexpr int kKvElems = Policy::kKvTile * kHeadDim;
  T* const k_base = smem_elems + Policy::kTileRows * kHeadDim;  // K buffers, then V buffers
  auto k_buffer = [&](int stage) { return KvTile{k_base + stage * kKvElems}; };
  auto v_buffer = [&](int stage) { return KvTile{k_base + (kStages + stage) * kKvElems}; };

  const int thread = thread_index_x();
  const int lane = lane_id();
  const int wave_row0 = wave_index() * R * 16;
  const int r = u.request;

  int qo_base = 0, qo_len = p.qo_len, kv_len = p.kv_len;
  const int32_t* pages = nullptr;
  int kv_token_base = 0;
  if constexpr (kPlanned) {
    qo_base = p.qo_indptr[r];
    qo_len = p.qo_indptr[r + 1] - qo_base;
    const int span = p.kv_indptr[r + 1] - p.kv_indptr[r];
    if constexpr (kPaged) {
      kv_len = span > 0 ? (span - 1) * p.page_div.size + p.kv_last_page_len[r] : 0;
      pages = p.kv_indices + p.kv_indptr[r];
    } else {
      kv_len = span;
      kv_token_base = p.kv_indptr[r];
    }
  }
  const int delta = kv_len - qo_len;  // query i sits at kv position i + delta
  const int t_first = u.row_begin / group, t_last = (u.row_end - 1) / group;
  // A packed row's token: page_divisor.h's multiply and shift by the group size (the Q copy and
  // the output take one per row they move), but in AMD's planned kernels, whose scalar registers
  // are full (the divisor's words spill there): a division.
  auto token_of = [&](int packed) {
    if constexpr (kPlanned && kWaveSize == 64) {
      return packed / group;
    } else {
      return page_of(packed, p.group_div);
    }
  };
  // A packed row's token (within the request) and query head, for the copies of Q and O. (The
  // lse store spells it out: through this helper AMD's single-request kernels take one more
  // scalar register.)
  struct TokenHead {
    int token, head;
  };
  auto token_head = [&](int packed) {
    const int token = token_of(packed);
    return TokenHead{token, u.kv_head * group + (packed - token * group)};
  };
  const bool custom = Policy::kCustomMask && p.custom_mask != nullptr;
  const flashinfer_ops::single_split::KvRange visible = flashinfer_ops::single_split::visible_kv(
      t_first, t_last, delta, u.kv_begin, min_int(u.kv_end, kv_len), p.causal && !custom, p.window_left);
  const int kv_lo = visible.lo, kv_hi = visible.hi;
  const int num_kv_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, Policy::kKvTile) : 0;

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const KvAddress<kPaged> kv_addr{pages,
                                  kv_token_base,
                                  p.page_div,
                                  p.kv_stride_page,
                                  p.kv_stride_token,
                                  u.kv_head * p.kv_stride_head};

  // Each thread copies one fixed 16-byte column chunk of kKvTile / kRowsPerPass rows per tile;
  // only the row index changes between passes, so the per-copy address math is one multiply-add
  // (contiguous K/V) or a page lookup (paged).
  constexpr int kRowsPerPass = kThreads / kChunks;
  constexpr int kKvPasses = Policy::kKvTile / kRowsPerPass;
  static_assert(kThreads % kChunks == 0 && Policy::kKvTile % kRowsPerPass == 0, "K/V tile copy");
  const int copy_row = thread / kChunks, copy_chunk = thread % kChunks;
  // Where this thread's pass 0 lands in any K/V tile, as an element offset (rows a multiple of
  // 8 apart share the swizzle, so the passes are a constant step apart); taken at each tile's
  // copy, where it is used.
  auto copy_dst = [&] {
    return static_cast<int>(k_buffer(0).chunk_ptr(copy_row, copy_chunk) - k_buffer(0).data);
  };
  auto dst_chunk = [&](const KvTile& tile, int dst0, int i) -> T* {
    if constexpr (kRowsPerPass % 8 == 0) {
      return tile.data + dst0 + i * kRowsPerPass * kHeadDim;
    } else {
      return tile.chunk_ptr(copy_row + i * kRowsPerPass, copy_chunk);
    }
  };
  const T* k_src = k + copy_chunk * 8;
  const T* v_src = v + copy_chunk * 8;
  // Contiguous K/V: the passes of one thread are rows kRowsPerPass apart, a fixed pointer step.
  const int64_t pass_step = static_cast<int64_t>(kRowsPerPass) * p.kv_stride_token;
  // Paged K/V on NVIDIA: each row's cache offset is looked up once per tile, not by each of the
  // kChunks threads that copy the row's chunks, into row_offsets[tile % 2][slot of row], which
  // the copies read. Tile t's kKvTile rows are looked up by the threads of group t % kLookupGroups
  // (whole warps, one row each), so that each warp looks up every kLookupGroups-th tile with all
  // its lanes instead of every tile with a part of them. The offsets are in bytes, so that a
  // copy's address is one 64-bit add to the thread's K or V chunk pointer (element offsets took
  // four: the chunk, the scaling, then K and V). kStages tiles' offsets are in place before the
  // loop; iteration t stores tile t + kStages's (loaded in iteration t - 1, by the same group) and
  // issues the page-table load of tile t + kStages + 1, so no thread waits on a lookup.
  constexpr bool kSharedRows = kPaged && Policy::kSharedRowOffsets;
  constexpr int kLookupGroups = kThreads / Policy::kKvTile;
  static_assert(!kSharedRows || (kThreads % Policy::kKvTile == 0 && Policy::kKvTile % kWaveSize == 0 &&
                                 kLookupGroups >= 2 && Policy::kRowOffsetBytes > 0),
                "row offsets: whole waves per group, a group's lookup stored before its next");
  int64_t* const row_offsets = reinterpret_cast<int64_t*>(smem + Policy::kRowOffsetBase);
  // Derived from an opaque copy of the thread index where used, not held through the loop.
  // (Unsigned: the divisions by powers of two are shifts and masks.)
  auto looks_up = [&](int tile) {
    return static_cast<unsigned>(opaque_int(thread)) / Policy::kKvTile == static_cast<unsigned>(tile) % kLookupGroups;
  };
  auto lookup_row_of = [&] { return static_cast<unsigned>(opaque_int(thread)) % Policy::kKvTile; };
  // Row r's slot: (r % kRowsPerPass) * kKvPasses + r / kRowsPerPass, so that the kKvPasses rows
  // one thread copies lie side by side (read as 16-byte words, half the shared loads).
  auto lookup_slot = [&] {
    const unsigned lookup_row = lookup_row_of();
    return static_cast<int>(lookup_row % kRowsPerPass * kKvPasses + lookup_row / kRowsPerPass);
  };
  auto row_offset_at = [&](int kv0) -> int64_t {
    const int pos = kv0 + static_cast<int>(lookup_row_of());
    return pos < kv_hi ? kv_addr(pos) * static_cast<int64_t>(sizeof(T)) : 0;
  };
  int64_t pending_offset = 0;
  // This thread's rows' offsets of one tile, read from shared memory before any of the tile's
  // copies is issued (a shared load between two cp.async costs the issue slots of a pipeline
  // drain on NVIDIA).
  struct RowOffsets {
    int64_t v[kSharedRows ? kKvPasses : 1];
  };
  auto read_row_offsets = [&](int buffer) {
    RowOffsets offs{};
    if constexpr (kSharedRows) {
#pragma unroll
      for (int i = 0; i < kKvPasses; ++i) {
        offs.v[i] = row_offsets[buffer * Policy::kKvTile + copy_row * kKvPasses + i];
      }
    }
    return offs;
  };
  auto load_kv = [&](const KvTile& tile, const T* src_base, int kv0, const RowOffsets& offs) {
    const int dst0 = copy_dst();
    if constexpr (kSharedRows) {
#pragma unroll
      for (int i = 0; i < kKvPasses; ++i) {
        const int row = copy_row + i * kRowsPerPass;
        const bool in_bounds = kv0 + row < kv_hi;
        copy_global_to_shared_16b(dst_chunk(tile, dst0, i),
                                  reinterpret_cast<const T*>(reinterpret_cast<const char*>(src_base) + offs.v[i]),
                                  in_bounds);
      }
    } else if constexpr (kPaged) {
      // AMD: a page lookup per row copy, in a rolled loop (its paged kernels' register budget).
      // The body stays a lambda: written inline, clang gives gfx942's masked head_dim 256 paged
      // kernel 257 VGPRs (one wave per SIMD instead of two).
      auto copy_pass = [&](int i) {
        const int row = copy_row + i * kRowsPerPass;
        const int pos = kv0 + row;
        const bool in_bounds = pos < kv_hi;
        const T* src = in_bounds ? src_base + kv_addr(pos) : src_base;
        copy_global_to_shared_16b(dst_chunk(tile, dst0, i), src, in_bounds);
      };
#pragma unroll 1
      for (int i = 0; i < kKvPasses; ++i) copy_pass(i);
    } else {
      const T* first = src_base + kv_addr(kv0 + copy_row);
#pragma unroll
      for (int i = 0; i < kKvPasses; ++i) {
        // Rows past kv_hi copy nothing (zero-filled): their address is never read.
        const int row = copy_row + i * kRowsPerPass;
        const bool in_bounds = kv0 + row < kv_hi;
        copy_global_to_shared_16b(dst_chunk(tile, dst0, i), first + i * pass_step, in_bounds);
      }
    }
  };

  block_sync();  // the previous unit's readers of shared memory are done
  // The Q copy's per-thread rows are derived per unit (persistent launches would otherwise hold
  // them, or spill them, across units). Planned kernels divide each row by the group; single
  // requests walk their rows (packed_rows.h), whose state does not fit beside the planned
  // kernels' (spills on sm_80 and AMD).
  const int q_thread = opaque_int(thread);
  if constexpr (kPlanned) {
#pragma unroll
    for (int i = 0; i < Policy::kTileRows * kChunks / kThreads; ++i) {
      const int linear = i * kThreads + q_thread;
      const int row = linear / kChunks, chunk = linear % kChunks;
      const int packed = u.row_begin + row;
      const bool in_bounds = packed < u.row_end;
      const T* src = q;
      if (in_bounds) {
        const auto [token, head] = token_head(packed);
        src = q + static_cast<int64_t>(qo_base + token) * p.q_stride_token + head * p.q_stride_head +
              chunk * 8;
      }
      copy_global_to_shared_16b(q_tile.chunk_ptr(row, chunk), src, in_bounds);
    }
  } else {
    // Each thread copies one column chunk of rows kRowsPerPass apart.
    const int row0 = q_thread / kChunks, chunk = q_thread % kChunks;
    PackedRowWalk rows(u.row_begin + row0, kRowsPerPass, group, token_of, qo_base, u.kv_head * group,
                       RowStrides{p.q_stride_token, p.q_stride_head});
    const T* q_chunk = q + chunk * 8;
#pragma unroll
    for (int i = 0; i < Policy::kTileRows / kRowsPerPass; ++i) {
      const int row = row0 + i * kRowsPerPass;
      const bool in_bounds = u.row_begin + row < u.row_end;
      copy_global_to_shared_16b(q_tile.chunk_ptr(row, chunk), in_bounds ? q_chunk + rows.offset() : q,
                                in_bounds);
      rows.advance();
    }
  }
  if (num_kv_tiles > 0) {
    if constexpr (kSharedRows) {
      if (looks_up(0)) row_offsets[lookup_slot()] = row_offset_at(kv_lo);
      if (kStages == 2 && num_kv_tiles > 1 && looks_up(1)) {
        row_offsets[Policy::kKvTile + lookup_slot()] = row_offset_at(kv_lo + Policy::kKvTile);
      }
      if (num_kv_tiles > kStages && looks_up(kStages)) {
        pending_offset = row_offset_at(kv_lo + kStages * Policy::kKvTile);
      }
      block_sync();  // the first kStages tiles' row offsets are in place
    }
    const RowOffsets offs = read_row_offsets(0);
    load_kv(k_buffer(0), k_src, kv_lo, offs);
    if constexpr (kStages == 2) load_kv(v_buffer(0), v_src, kv_lo, offs);
  }
  copy_commit_group();

  // The first packed row of this wave's score rows; the masked tiles derive their rows' tokens
  // from it (rows past row_end are padding). Derived there from an opaque copy of wave_row0, not
  // held through the loop: registers are the limit of the tile shapes.
  auto wave_packed0 = [&] { return u.row_begin + opaque_int(wave_row0); };

  const bool soft_cap = p.cap_log2e > 0.0f;
  const float exp_scale = kTransformScores ? 1.0f : p.logit_scale;
  const uint8_t* mask = nullptr;
  if (custom) mask = p.custom_mask + (p.mask_indptr != nullptr ? p.mask_indptr[r] : 0);
  const float neg_inf = -__builtin_huge_valf();

  // The loop of the single-request kernels (fp16: P's row sums on the tensor cores; the next
  // tile's copies after the scores) serves the planned ragged fp16 kernels too: 1.4-2.3% faster
  // there on an H200 at head_dim 128, 0.7-1.4% at 64 (4 x 4k and 1 x 4k). Not the paged ones,
  // 1-2% slower so: their row-offset table holds registers the loop then spills (also with the
  // page lookup ahead held as a 32-bit id). Nor bf16 (no tensor-core row sums; the copies'
  // order alone ran 1-1.5% slower in the fp16 ragged kernel), nor head_dim 256 (one K/V buffer,
  // so only the row sums would change). docs/kernel_notes.md.
  constexpr bool kSingleRequestLoop =
      !kPlanned || (!kPaged && std::is_same_v<T, half_t> && kHeadDim <= 128);
  // fp16 kernels on NVIDIA sum P's rows on the tensor cores (and unroll every k step of S,
  // below): measured faster there (docs/kernel_notes.md). Not bf16: summed as the rounded
  // operand, P's 8-bit mantissa moves lse by up to ~1.4e-3 (log2 units) on rows of few keys,
  // past the lse tolerance; not the paged planned kernels (kSingleRequestLoop).
  constexpr bool kRowSumsByMma = kScoreRowSumsByMma && kSingleRequestLoop && std::is_same_v<T, half_t>;
  // Every kernel without a score transform unrolls S's k steps (where the backend would keep a
  // loop: NVIDIA, head_dim 128), as the fp16 single-request kernels measured faster: bf16 too,
  // with its float row sums (spill-free on sm_90a with the fragment store), and the planned kernels
  // (sm_90a: 28 bytes of spill traffic ragged, 60 paged; 2-4% faster paged, 0-2% ragged).
  constexpr bool kUnrollScoreSteps = kRowSumsByMma || !kTransformScores;
  // The same kernels rescale O (when a row maximum moved) before the exponentials rather than
  // after them, so that the exponentials and P.V form one straight block the compiler
  // interleaves, as fa2's. The others (bf16, the paged planned kernels) keep the order that fits
  // their registers (bf16 single: 76-108 bytes of spills the other way).
  constexpr bool kRescaleBeforeExp = kRowSumsByMma;
  FragC o[R][DF];
  ScoreRows m[R];
  RowSums<kRowSumsByMma> l[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    m[i] = score_rows_filled(neg_inf);
    l[i] = RowSums<kRowSumsByMma>::zero();
#pragma unroll
    for (int dn = 0; dn < DF; ++dn) {
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) o[i][dn].v[e] = 0.0f;
    }
  }

  for (int tile = 0; tile < num_kv_tiles; ++tile) {
    const int kv0 = kv_lo + tile * Policy::kKvTile;
    const int stage = kStages == 2 ? tile & 1 : 0;
    const KvTile k_tile = k_buffer(stage), v_tile = v_buffer(stage);
    copy_wait_groups<0>();
    // Two stages: K and V of this tile (and Q) landed; every wave is done with the previous
    // tile, whose buffers now take the next one. One stage: K landed; V streams in under S.
    block_sync();
    // The two-stage single-request (and planned ragged) kernels issue the next tile's copies
    // after the softmax instead (below), so that every warp starts S right after the barrier, as
    // fa2 issues its copies inside the math: 1-4% faster on an H200 (docs/kernel_notes.md). Not
    // the split ones, whose loop would spill 100 bytes and more; not the other planned ones
    // (kSingleRequestLoop).
    constexpr bool kCopiesAfterScores = kStages == 2 && kSingleRequestLoop && !kSplitKv;
    if constexpr (kStages == 2 && !kCopiesAfterScores) {
      if (tile + 1 < num_kv_tiles) {
        const RowOffsets offs = read_row_offsets(stage ^ 1);
        load_kv(k_buffer(stage ^ 1), k_src, kv0 + Policy::kKvTile, offs);
        load_kv(v_buffer(stage ^ 1), v_src, kv0 + Policy::kKvTile, offs);
      }
      copy_commit_group();
    } else if constexpr (kStages == 1) {
      load_kv(v_tile, v_src, kv0, read_row_offsets(tile & 1));
      copy_commit_group();
    }
    if constexpr (kSharedRows) {
      // Buffer (t + kStages) % 2 was last read before this iteration's barrier (two stages: tile
      // t's; one stage: tile t - 1's). It takes tile t + kStages's, read after the next barrier.
      const int ahead = tile + kStages;
      if (ahead < num_kv_tiles && looks_up(ahead)) {
        row_offsets[(ahead & 1) * Policy::kKvTile + lookup_slot()] = pending_offset;
      }
      if (ahead + 1 < num_kv_tiles && looks_up(ahead + 1)) {
        pending_offset = row_offset_at(kv0 + (kStages + 1) * Policy::kKvTile);
      }
    }

    FragC s[R][C];
    score_block<kHeadDim, T, kUnrollScoreSteps>(s, q_tile, wave_row0, k_tile, 0);

    // Logits to base-2 units. With a soft cap (or a non-positive scale) every score is
    // transformed here; otherwise the scale is folded into the exponent below (one FFMA per
    // score), and the row maxima are taken on the raw scores.
    if constexpr (kTransformScores) {
#pragma unroll
      for (int i = 0; i < R; ++i) {
#pragma unroll
        for (int j = 0; j < C; ++j) {
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) {
            const float x = s[i][j].v[e] * p.logit_scale;
            s[i][j].v[e] = soft_cap ? p.cap_log2e * fast_tanh(x) : x;
          }
        }
      }
    }
    // Masks are applied only on the tiles that need them (block-uniform test), so that the
    // common tile runs branch-free.
    const bool need_mask = custom || kv0 + Policy::kKvTile > kv_hi ||
                           (p.causal && kv0 + Policy::kKvTile - 1 > t_first + delta) ||
                           (p.window_left >= 0 && kv0 < t_last + delta - p.window_left);
    if (need_mask) {
      const int packed0 = wave_packed0();
      int row_token[R][kScoreRowsPerLane];
      bool row_valid[R][kScoreRowsPerLane];
#pragma unroll
      for (int i = 0; i < R; ++i) {
#pragma unroll
        for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
          const int packed = packed0 + 16 * i + score_slot_row(lane, slot);
          row_valid[i][slot] = packed < u.row_end;
          row_token[i][slot] = packed / group;
        }
      }
      // The custom mask (a load per score) and the arithmetic masks are separate loops behind
      // one block-uniform test: a test per score would split the scores into serial blocks.
      auto apply_masks = [&](auto use_custom) {
#pragma unroll
        for (int i = 0; i < R; ++i) {
#pragma unroll
          for (int j = 0; j < C; ++j) {
#pragma unroll
            for (int e = 0; e < kAccElems; ++e) {
              const int slot = score_row_slot(e);
              const int token = row_token[i][slot];
              const int kv = kv0 + 16 * j + score_col(lane, e);
              bool visible = row_valid[i][slot] && kv < kv_hi;
              if constexpr (decltype(use_custom)::value) {
                const int64_t bit = static_cast<int64_t>(token) * kv_len + kv;
                visible = visible && ((mask[bit >> 3] >> (bit & 7)) & 1);
              } else {
                if (p.causal) visible = visible && kv <= token + delta;
              }
              if (p.window_left >= 0) visible = visible && kv >= token + delta - p.window_left;
              if (!visible) s[i][j].v[e] = neg_inf;
            }
          }
        }
      };
      if (custom) {
        apply_masks(std::true_type{});
      } else {
        apply_masks(std::false_type{});
      }
    }

    // Online softmax (base 2, online_softmax.h); rows that have seen nothing keep m = -inf and
    // use 0 as the base. m is kept in base-2 units (exp_scale > 0 preserves the order of the
    // maxima).
    FragA<T, 16> prob[R][C];
    if constexpr (kRescaleBeforeExp) {
      // The maxima, bases and rescale of every row fragment first, then O's rescale (skipped,
      // behind one wave vote, once the maxima settle), so that the exponentials and P.V follow as
      // one straight block the compiler may interleave.
      ScoreRows base[R], m_new[R];
      bool unchanged = true;
#pragma unroll
      for (int i = 0; i < R; ++i) {
        ScoreRows row_max = score_rows_filled(neg_inf);
        score_row_fold(s[i], row_max, MaxOp{});
        score_row_allreduce(row_max, MaxOp{});
#pragma unroll
        for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
          m_new[i].v[slot] = next_running_max(m[i].v[slot], row_max.v[slot] * exp_scale);
          unchanged = unchanged && m_new[i].v[slot] == m[i].v[slot];
          base[i].v[slot] = m_new[i].v[slot] == neg_inf ? 0.0f : m_new[i].v[slot];
        }
      }
      if (!wave_all(unchanged)) {
#pragma unroll
        for (int i = 0; i < R; ++i) {
          ScoreRows rescale;
#pragma unroll
          for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
            rescale.v[slot] = fast_exp2(m[i].v[slot] - base[i].v[slot]);
            l[i].scale(slot, rescale.v[slot]);
          }
          const RowVals acc_rescale = acc_rows_from_score_rows(rescale);
#pragma unroll
          for (int dn = 0; dn < DF; ++dn) {
#pragma unroll
            for (int e = 0; e < kAccElems; ++e) o[i][dn].v[e] *= acc_rescale.v[acc_row_slot(e)];
          }
        }
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        m[i] = m_new[i];
#pragma unroll
        for (int j = 0; j < C; ++j) {
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) {
            const int slot = score_row_slot(e);
            const float pe = fast_exp2(s[i][j].v[e] * exp_scale - base[i].v[slot]);
            s[i][j].v[e] = pe;
            l[i].add(slot, pe);
          }
          score_to_operand(prob[i][j], s[i][j]);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < R; ++i) {
        ScoreRows row_max = score_rows_filled(neg_inf);
        score_row_fold(s[i], row_max, MaxOp{});
        score_row_allreduce(row_max, MaxOp{});
        ScoreRows rescale, base;
        bool unchanged = true;
#pragma unroll
        for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
          const float m_new = next_running_max(m[i].v[slot], row_max.v[slot] * exp_scale);
          unchanged = unchanged && m_new == m[i].v[slot];
          base.v[slot] = m_new == neg_inf ? 0.0f : m_new;
          rescale.v[slot] = fast_exp2(m[i].v[slot] - base.v[slot]);
          m[i].v[slot] = m_new;
          l[i].scale(slot, rescale.v[slot]);
        }
#pragma unroll
        for (int j = 0; j < C; ++j) {
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) {
            const int slot = score_row_slot(e);
            const float pe = fast_exp2(s[i][j].v[e] * exp_scale - base.v[slot]);
            s[i][j].v[e] = pe;
            l[i].add(slot, pe);
          }
          score_to_operand(prob[i][j], s[i][j]);
        }
        // Once the row maxima settle, whole tiles pass without a change: skip the rescale of O.
        if (!wave_all(unchanged)) {
          const RowVals acc_rescale = acc_rows_from_score_rows(rescale);
#pragma unroll
          for (int dn = 0; dn < DF; ++dn) {
#pragma unroll
            for (int e = 0; e < kAccElems; ++e) o[i][dn].v[e] *= acc_rescale.v[acc_row_slot(e)];
          }
        }
      }
    }

    // K and V of the next tile, into the other stage: the block above, written out again (one
    // lambda called from either place changed the planned kernels' register allocation).
    if constexpr (kCopiesAfterScores) {
      if (tile + 1 < num_kv_tiles) {
        const RowOffsets offs = read_row_offsets(stage ^ 1);
        load_kv(k_buffer(stage ^ 1), k_src, kv0 + Policy::kKvTile, offs);
        load_kv(v_buffer(stage ^ 1), v_src, kv0 + Policy::kKvTile, offs);
      }
      copy_commit_group();
    }
    if constexpr (kStages == 1) {
      copy_wait_groups<0>();
      block_sync();  // V_tile landed; every wave is done with K_tile
      if (tile + 1 < num_kv_tiles) {
        load_kv(k_tile, k_src, kv0 + Policy::kKvTile, read_row_offsets((tile + 1) & 1));
        copy_commit_group();
      }
    }

#pragma unroll
    for (int j = 0; j < C; ++j) {
#pragma unroll
      for (int dn = 0; dn < DF; ++dn) {
        FragB<T, 16> vb;
        load_b_kn(vb, v_tile, 16 * j, 16 * dn);
#pragma unroll
        for (int i = 0; i < R; ++i) mma(o[i][dn], prob[i][j], vb);
      }
#pragma unroll
      for (int i = 0; i < R; ++i) l[i].template add_block<T>(prob[i][j]);
    }
  }

  // Epilogue: o = acc / l (times v_scale), lse = m + log2(l); rows that saw nothing: 0, -inf.
  copy_wait_groups<0>();
  block_sync();  // no copy into shared memory is in flight and every wave is done reading it
  // The output tile is staged in shared memory, then written with 16-byte stores: as T in the
  // Q tile for single requests (split launches: to their partial rows, below); as float32 over
  // the whole (now free) shared memory for planned launches, whose split items write float32
  // partial rows.
  // Every block of a split single-request launch writes partial rows (one chunk or several:
  // their layout and the merge are then the same for every tile, and the kernel has no
  // registers for the choice); the chunk is derived here, from an opaque block index, so that
  // nothing of it is held through the tile loop.
  int partial_row = u.partial_row, q_begin = u.q_begin;
  if constexpr (!kPlanned && kSplitKv) {
    const int unit = opaque_int(block_index_y() + kSingleGridRows * block_index_z());
    partial_row = single_unit<Policy, true>(p, group, unit).chunk * p.qo_len;
    q_begin = 0;
  }
  const bool partial = (!kPlanned && kSplitKv) || partial_row >= 0;
  // The planned ragged kernels (NVIDIA, head_dim 128) stage a unit that is not a split's part
  // as single requests do, as T in the Q tile, rather than as float32 over all shared memory:
  // fewer spills (sm_90a d128 fp16 28/28 -> 20/28 bytes) and 3-6% faster at 16 x 1k fp16 on an
  // H100 (docs/kernel_notes.md). At head_dim 64 a variant under evaluation (kernel_variants.h).
  // Not the paged ones: their loop spills with it.
  constexpr bool kPlannedTStage = kPlanned && !kPaged && kWaveSize == 32 &&
                                  (kHeadDim == 128 || (kHeadDim == 64 && kVariantPrefillPlannedTStageD64)) &&
                                  !kTransformScores && !kMasked;
  float* float_stage = reinterpret_cast<float*>(smem);
  // The float32 stage's rows are kHeadDim floats, a multiple of the 128 bytes of the banks, so
  // the accumulator's stores (a fragment's rows at one column) would all hit the same banks.
  // Where the accumulator holds column pairs (NVIDIA: one 8-byte store covers rows r..r+3, r %
  // 4 == 0, in each half warp) the stage's 32-byte blocks are XOR-swizzled within a row by
  // (row ^ row / 2) % 4, distinct over those four rows; a block stays whole, so each copy-out
  // read is still one contiguous run. Where it holds single columns (AMD: one store covers rows
  // e, e + 4, e + 8, e + 12 at 16 columns, two rows per half wave) the rows are padded by 4
  // floats, which puts rows 4 apart 16 banks apart at no per-store address math (the swizzle's
  // math sent AMD's planned head_dim 256 kernels, held at 2 waves, to scratch). The padded stage
  // must fit in the shared memory the kernel has: not at head_dim 256 on AMD (64 KiB), which
  // keeps the plain layout.
  constexpr bool kSwizzledStage = kAccColRun == 2;
  constexpr int kPaddedRow = kHeadDim + 4;
  constexpr int kStageRow =
      !kSwizzledStage && Policy::kTileRows * kPaddedRow * 4 <= Policy::kRowOffsetBase ? kPaddedRow : kHeadDim;
  auto stage_at = [&](int row, int col) {
    if constexpr (kSwizzledStage) {
      return row * kHeadDim + (((col >> 3) ^ ((row ^ (row >> 1)) & 3)) << 3) + (col & 7);
    } else {
      return row * kStageRow + col;
    }
  };
  static_assert(kHeadDim / 8 >= 4, "the stage swizzle permutes 32-byte blocks in groups of 4");
  static_assert(!kPlanned || Policy::kTileRows * kHeadDim * 4 <= Policy::kSmemBytes,
                "the float32 output tile must fit in shared memory");
  const int num_qo_heads = p.num_qo_heads;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const ScoreRows sum = l[i].total();
    ScoreRows inv;
#pragma unroll
    for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
      inv.v[slot] = sum.v[slot] > 0.0f ? p.o_scale / sum.v[slot] : 0.0f;
    }
    const RowVals acc_inv = acc_rows_from_score_rows(inv);
    // Planned launches stage O as float32: where the platform's accumulator holds adjacent
    // columns of a row in consecutive elements (kAccColRun 2), each pair leaves in one 8-byte
    // store. Single requests stage it as T in the Q tile, through the fragment store (store_c:
    // on sm_90 one stmatrix per fragment) but in the long-launch instantiation of the kernels
    // at the edge of their registers (kEpilogueByLength), which store each
    // element. (ncu, one K/V tile: most of the kernel's stalls waited on instruction fetch in
    // the ~2000 instructions of the per-element stage.)
    constexpr bool kFragmentStore = !kEpilogueByLength<T, kHeadDim, kPlanned, kTransformScores> || kFewTiles;
    if (kPlannedTStage && !partial) {
#pragma unroll
      for (int dn = 0; dn < DF; ++dn) store_c<T>(q_tile, wave_row0 + 16 * i, 16 * dn, o[i][dn], acc_inv);
    } else if constexpr (kPlanned) {
#pragma unroll
      for (int dn = 0; dn < DF; ++dn) {
#pragma unroll
        for (int e = 0; e < kAccElems; e += kAccColRun) {
          const int row = wave_row0 + 16 * i + acc_row(lane, e);
          const int col = 16 * dn + acc_col(lane, e);
          const float scale = acc_inv.v[acc_row_slot(e)];
          if constexpr (kAccColRun == 2) {
            struct alignas(8) Pair {
              float lo, hi;
            };
            *reinterpret_cast<Pair*>(float_stage + stage_at(row, col)) =
                Pair{o[i][dn].v[e] * scale, o[i][dn].v[e + 1] * scale};
          } else {
            float_stage[stage_at(row, col)] = o[i][dn].v[e] * scale;
          }
        }
      }
    } else if constexpr (kFragmentStore) {
#pragma unroll
      for (int dn = 0; dn < DF; ++dn) store_c<T>(q_tile, wave_row0 + 16 * i, 16 * dn, o[i][dn], acc_inv);
    } else {
      // Written out here rather than as a backend store (the HIP store_c is the same loop): moved
      // behind that interface unchanged, these stores shifted the d128 tile loop's allocation
      // into spills (docs/kernel_notes.md, the fragment store).
#pragma unroll
      for (int dn = 0; dn < DF; ++dn) {
#pragma unroll
        for (int e = 0; e < kAccElems; ++e) {
          // Row = a multiple of 16 plus the lane's row in the fragment: the chunk swizzle then
          // depends on the latter alone, one term per lane for every store.
          const int col = 16 * dn + acc_col(lane, e);
          constexpr int kElems = QTile::kChunkElems;
          *(q_tile.chunk_ptr_in_block(wave_row0 + 16 * i, acc_row(lane, e), col / kElems) + col % kElems) =
              from_float<T>(o[i][dn].v[e] * acc_inv.v[acc_row_slot(e)]);
        }
      }
    }
    // lse after O has left the registers.
    if (score_row_leader(lane)) {
#pragma unroll
      for (int slot = 0; slot < kScoreRowsPerLane; ++slot) {
        const int packed = u.row_begin + wave_row0 + 16 * i + score_slot_row(lane, slot);
        if (packed >= u.row_end) continue;
        const int token = token_of(packed);
        const int head = u.kv_head * group + (packed - token * group);
        const float lse = sum.v[slot] > 0.0f ? m[i].v[slot] + fast_log2(sum.v[slot]) : neg_inf;
        if (partial) {
          p.partial_lse[static_cast<int64_t>(partial_row + token - q_begin) * num_qo_heads +
                        head] = lse;
        } else if (p.lse != nullptr) {
          p.lse[static_cast<int64_t>(qo_base + token) * num_qo_heads + head] = lse;
        }
      }
    }
  }
  block_sync();
  if constexpr (kPlanned) {
    // A division per row, as in the Q copy.
    if (partial) {
      constexpr int kFloatChunks = kHeadDim / 4;
#pragma unroll 1
      for (int linear = thread; linear < Policy::kTileRows * kFloatChunks; linear += kThreads) {
        const int row = linear / kFloatChunks, chunk = linear % kFloatChunks;
        const int packed = u.row_begin + row;
        if (packed >= u.row_end) continue;
        const auto [token, head] = token_head(packed);
        const int64_t prow = partial_row + token - q_begin;
        float* dst = p.partial_o + (prow * num_qo_heads + head) * kHeadDim + chunk * 4;
        *reinterpret_cast<Chunk16*>(dst) =
            *reinterpret_cast<const Chunk16*>(float_stage + stage_at(row, chunk * 4));
      }
    } else if constexpr (!kPlannedTStage) {
      T* out = static_cast<T*>(p.o);
#pragma unroll 1
      for (int linear = thread; linear < Policy::kTileRows * kChunks; linear += kThreads) {
        const int row = linear / kChunks, chunk = linear % kChunks;
        const int packed = u.row_begin + row;
        if (packed >= u.row_end) continue;
        const auto [token, head] = token_head(packed);
        const float* src = float_stage + stage_at(row, chunk * 8);
        Chunk16 packed_out;
#pragma unroll
        for (int w = 0; w < 4; ++w) packed_out.w[w] = pack2<T>(src[2 * w], src[2 * w + 1]);
        T* dst = out + static_cast<int64_t>(qo_base + token) * p.o_stride_token +
                 head * p.o_stride_head + chunk * 8;
        *reinterpret_cast<Chunk16*>(dst) = packed_out;
      }
    }
    if (!kPlannedTStage || partial) return;
  }
  // Single request (and kPlannedTStage's units that are not a split's part): each thread copies
  // one column chunk of rows kRowsPerPass apart.
  // A split launch's chunk writes its rows (O / l, in T, as FlashInfer's split launches do) to
  // split_o, [chunks x qo_len, num_qo_heads, kHeadDim], for the merge.
  const int row_limit = u.row_end - u.row_begin;
  const int row0 = thread / kChunks, chunk = thread % kChunks;
  const RowStrides strides =
      partial ? RowStrides{num_qo_heads * kHeadDim, kHeadDim} : RowStrides{p.o_stride_token, p.o_stride_head};
  PackedRowWalk rows(u.row_begin + row0, kRowsPerPass, group, token_of, partial ? partial_row - q_begin : qo_base,
                     u.kv_head * group, strides);
  T* const dst0 = static_cast<T*>(partial ? p.split_o : p.o) + chunk * 8;
#pragma unroll
  for (int i = 0; i < Policy::kTileRows / kRowsPerPass; ++i) {
    const int row = row0 + i * kRowsPerPass;
    if (row < row_limit) {
      *reinterpret_cast<Chunk16*>(dst0 + rows.offset()) =
          *reinterpret_cast<const Chunk16*>(q_tile.chunk_ptr(row, chunk));
    }
    rows.advance();
  }
}

// Single request (kPlanned false): grid (num_kv_heads, q tiles), or (num_kv_heads, q tiles x kv
// chunks) with kSplitKv, a separate instantiation (the unsplit kernel's registers have no room
// for the chunks' outputs); one unit per block (single_unit, single_prefill_split.h). kFewTiles:
// the unsplit launch whose blocks run at most kFewTilesMax K/V tiles, where the policy has two
// epilogues (kEpilogueByLength).
// Planned batch: grid (grid_blocks), persistent over the plan's items x kv heads x row chunks,
// each block through its work list when the plan has lists for this grid.
template <typename T, int kHeadDim, bool kPaged, bool kPlanned, bool kTransformScores, bool kMasked = false,
          bool kSplitKv = false, bool kFewTiles = false>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS((PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>::kThreads))
    TFO_MIN_WAVES_PER_SIMD((PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>::kMinWavesPerSimd))
    prefill_kernel(const PrefillParams p, int grid_blocks) {
  using Policy = PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>;
  static_assert(!kFewTiles || (kEpilogueByLength<T, kHeadDim, kPlanned, kTransformScores> && !kSplitKv),
                "kFewTiles: the unsplit single-request kernels with two epilogues");
  extern TFO_SHARED __attribute__((aligned(128))) uint8_t prefill_smem[];
  check_tile_alignment(prefill_smem);  // tile offsets below are multiples of 128 bytes
  grid_dependency_wait();  // q, k/v, the index arrays and the plan may come from the launch before
  const int group = p.num_qo_heads / p.num_kv_heads;
  if constexpr (!kPlanned) {
    const SingleUnit su =
        single_unit<Policy, kSplitKv>(p, group, block_index_y() + kSingleGridRows * block_index_z());
    if (su.chunk >= su.chunks) return;
    const int rows = p.qo_len * group;
    const int row_begin = su.tile * Policy::kTileRows;
    WorkUnit u{0, row_begin, min_int(row_begin + Policy::kTileRows, rows), 0, p.kv_len, su.kv_head, -1, 0};
    if (su.chunks > 1) {
      const int span = p.kv_chunk_tiles * Policy::kKvTile;
      u.kv_begin = su.range.lo + su.chunk * span;
      u.kv_end = min_int(u.kv_begin + span, su.range.hi);
    }
    run_unit<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, kSplitKv, kFewTiles>(p, u, group, prefill_smem);
  } else {
    namespace pi = flashinfer_ops::plan_info;
    // This block's units (item, kv head, row chunk), in order: the entries of work list b when
    // the plan has lists for a grid of this size (each entry an item's kv head, all its row
    // chunks); else, or for a plan made for another grid, units b, b + grid, ...
    // Only positions in that order live through a unit: the plan's layout is read again at each
    // unit (AMD's planned kernels have no scalar register to spare for it), and the positions
    // come back through uniform_int, which the AMD compiler needs to keep them scalar there.
    const int32_t* plan = p.plan;
    const int chunk_count = ceil_div(plan[pi::kQTileRows] * group, Policy::kTileRows);
    auto chunks = [&] { return uniform_int(chunk_count); };
    auto items_at = [&] { return plan + pi::kHeaderSize; };
    auto list_offsets = [&] {
      return items_at() + pi::kItemFields * plan[pi::kNumItems] + pi::kRequestFields * plan[pi::kNumRequests];
    };
    int next = plan[pi::kNumLists] == grid_blocks ? list_offsets()[block_index_x()] * chunks() : 0;
    for (int rotation = block_index_x();; rotation += grid_blocks) {
      int unit = uniform_int(rotation);
      const int units_per_item = p.num_kv_heads * chunks();
      if (plan[pi::kNumLists] == grid_blocks) {
        const int at = uniform_int(next);
        if (at >= list_offsets()[block_index_x() + 1] * chunks()) break;
        const int entry = list_offsets()[grid_blocks + 1 + at / chunks()];
        unit = entry / p.num_kv_heads * units_per_item + entry % p.num_kv_heads * chunks() + at % chunks();
        next = at + 1;
      } else if (unit >= plan[pi::kNumItems] * units_per_item) {
        break;
      }
      const int32_t* items = items_at();
      const int32_t* item = items + pi::kItemFields * (unit / units_per_item);
      const int rest = unit % units_per_item;
      const int q_begin = item[pi::kQBegin];
      const int row_begin = q_begin * group + (rest % chunks()) * Policy::kTileRows;
      const int row_end = min_int(row_begin + Policy::kTileRows, item[pi::kQEnd] * group);
      if (row_begin >= row_end) continue;
      const WorkUnit u{item[pi::kRequest], row_begin,     row_end, item[pi::kKvBegin],
                       item[pi::kKvEnd],   rest / chunks(), item[pi::kPartialRow], q_begin};
      run_unit<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, kSplitKv, kFewTiles>(p, u, group, prefill_smem);
    }
  }
  grid_dependents_launch();  // this block's stores are issued
}

}  // namespace tfo::kernels::prefill
