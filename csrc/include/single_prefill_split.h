// The kv split of single-request prefill launches. Torch-free, host and device: the launch
// chooses the split (choose_single_prefill_split), the prefill kernel and the merge after it
// derive each tile's chunks from the same tile_kv_range, so they always agree.
//
// A single-request launch runs one block per (q tile, kv head). When those blocks leave most of
// the GPU idle (a few query tokens against a long kv), a tile's kv range is cut into chunks of
// chunk_tiles K/V tiles, one block each, in a separate instantiation of the kernel. Every block
// of such a launch writes its rows' O / l (in q's dtype, as FlashInfer's split launches do) and
// lse (base 2) to partial buffers, and a merge launch combines each row's chunks weighted by
// 2^lse (a tile of one chunk is copied).
//
// Grid: (num_kv_heads, tiles * splits) blocks. The scheduler starts blocks x first, so the heads
// are interleaved and every head's longest tiles run first (longest-first order keeps the
// causal tail short); unit y -> tile tiles - 1 - y / splits, chunk y % splits. Blocks past a
// tile's chunks return at once. Unsplit launches have splits = 1.
//
// Partial rows: chunk s of token i and query head h at row (s * qo_len + i) * num_qo_heads + h.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIP__)
#define TFO_SPLIT_HOST_DEVICE __host__ __device__
#else
#define TFO_SPLIT_HOST_DEVICE
#endif

namespace flashinfer_ops {
namespace single_split {

struct KvRange {
  int lo, hi;  // kv positions [lo, hi); empty when hi <= lo
};

// The kv positions that query tokens [t_first, t_last] (query i at kv position i + delta) may see
// within [kv_begin, kv_end): causal (unless a custom mask replaces it) and the sliding window.
TFO_SPLIT_HOST_DEVICE inline KvRange visible_kv(int t_first, int t_last, int delta, int kv_begin, int kv_end,
                                                bool causal, int window_left) {
  KvRange r{kv_begin, kv_end};
  if (causal && t_last + delta + 1 < r.hi) r.hi = t_last + delta + 1;
  if (window_left >= 0 && t_first + delta - window_left > r.lo) r.lo = t_first + delta - window_left;
  return r;
}

// Tile geometry of one launch: packed rows (row = token * group + head in group) per q tile and
// kv rows per K/V tile.
struct Geometry {
  int qo_len, kv_len, group, tile_rows, kv_tile;
  bool causal;  // causal and no custom mask
  int window_left;
};

TFO_SPLIT_HOST_DEVICE inline int num_tiles(const Geometry& g) {
  return (g.qo_len * g.group + g.tile_rows - 1) / g.tile_rows;
}

// The kv range of q tile t and its length in K/V tiles.
TFO_SPLIT_HOST_DEVICE inline KvRange tile_kv_range(const Geometry& g, int t) {
  const int rows = g.qo_len * g.group;
  const int row_end = (t + 1) * g.tile_rows < rows ? (t + 1) * g.tile_rows : rows;
  return visible_kv(t * g.tile_rows / g.group, (row_end - 1) / g.group, g.kv_len - g.qo_len, 0, g.kv_len,
                    g.causal, g.window_left);
}

TFO_SPLIT_HOST_DEVICE inline int range_tiles(const KvRange& r, int kv_tile) {
  return r.hi > r.lo ? (r.hi - r.lo + kv_tile - 1) / kv_tile : 0;
}

// Chunks of a tile of n K/V tiles: at least one (an empty range still writes its rows).
TFO_SPLIT_HOST_DEVICE inline int tile_chunks(int n, int chunk_tiles) {
  return n > chunk_tiles ? (n + chunk_tiles - 1) / chunk_tiles : 1;
}

// The most K/V tiles of any q tile of the launch.
TFO_SPLIT_HOST_DEVICE inline int longest_tile(const Geometry& g) {
  int longest = 0;
  for (int t = 0, tiles = num_tiles(g); t < tiles; ++t) {
    const int n = range_tiles(tile_kv_range(g, t), g.kv_tile);
    longest = n > longest ? n : longest;
  }
  return longest;
}

struct Split {
  int splits = 1;       // chunks of the longest tile (1: no split)
  int chunk_tiles = 0;  // K/V tiles per chunk
};

// The policy, from H200 measurements (d128, 32/8 heads; kernel_notes.md): splitting pays only
// where the unsplit launch leaves most multiprocessors without a block, a few query tiles
// against a long kv (16 queries x kv 8k: 8 blocks, 252 us unsplit). Where every multiprocessor
// already has a block (512 x 512: 128 blocks on 132 SMs), a second block per SM adds little
// throughput and the partial rows and the merge launch cost more (23.9 -> 29.3 us); chunks of a
// few K/V tiles are all fixed cost (256 x 256: 15.8 -> 18.0 us). So: split launches of at most
// slots / kMaxFillDivisor blocks, into chunks of at least kMinChunkTiles K/V tiles, as many as
// one wave of slots holds.
constexpr int kMaxFillDivisor = 4;
constexpr int kMinChunkTiles = 4;
constexpr int kMaxSplits = 32;

// The split with chunks of chunk_tiles K/V tiles (splits: the most chunks of any tile).
inline Split split_with_chunk(const Geometry& g, int chunk_tiles) {
  Split split{1, chunk_tiles};
  for (int t = 0, tiles = num_tiles(g); t < tiles; ++t) {
    const int chunks = tile_chunks(range_tiles(tile_kv_range(g, t), g.kv_tile), chunk_tiles);
    split.splits = chunks > split.splits ? chunks : split.splits;
  }
  return split;
}

// The split of a launch on `slots` resident blocks (multiprocessors x blocks per multiprocessor),
// with at most max_splits chunks per tile (1: never split).
inline Split choose_single_prefill_split(const Geometry& g, int num_kv_heads, int slots, int max_splits) {
  const int tiles = num_tiles(g);
  const int64_t blocks = static_cast<int64_t>(tiles) * num_kv_heads;
  if (tiles == 0 || max_splits <= 1 || blocks * kMaxFillDivisor > slots) return Split{};
  const int longest = longest_tile(g);
  int splits = static_cast<int>(slots / blocks);  // >= kMaxFillDivisor
  const int cap = max_splits < kMaxSplits ? max_splits : kMaxSplits;
  splits = splits < cap ? splits : cap;
  splits = splits < longest / kMinChunkTiles ? splits : longest / kMinChunkTiles;
  if (splits <= 1) return Split{};
  const Split split = split_with_chunk(g, (longest + splits - 1) / splits);
  return split.splits > 1 ? split : Split{};
}

}  // namespace single_split
}  // namespace flashinfer_ops
