// The prefill merges: split items' float32 partial rows of planned batches
// (merge_partials_kernel), and the kv chunks of split single-request launches
// (merge_split_tiles_kernel), each weighted by 2^(lse - max) as the CPU path does.
#pragma once

#include "prefill_kernel.h"

namespace tfo::kernels::prefill {

inline constexpr int kMergeThreads = 256;

// Combines the num_splits partial rows of each split request (plan's per-request table) into o
// and lse, exactly as the CPU path: weights 2^(lse_s - max), normalised by their sum.
// One wave per (token, head); grid-stride over qo_tokens x num_qo_heads.
template <typename T, int kHeadDim>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMergeThreads)
    merge_partials_kernel(const PrefillParams p, int qo_tokens, int grid_blocks) {
  namespace pi = flashinfer_ops::plan_info;
  grid_dependency_wait();  // the prefill launch's partial rows
  const int32_t* plan = p.plan;
  if (plan[pi::kPartialRows] == 0) return;
  constexpr int kWavesPerBlock = kMergeThreads / kWaveSize;
  constexpr int kVecsPerLane = (kHeadDim / 4 + kWaveSize - 1) / kWaveSize;
  const int batch = plan[pi::kNumRequests];
  const int32_t* requests = plan + pi::kHeaderSize + pi::kItemFields * plan[pi::kNumItems];
  const int heads = p.num_qo_heads;
  const int lane = lane_id();
  const float neg_inf = -__builtin_huge_valf();
  const int64_t pairs = static_cast<int64_t>(qo_tokens) * heads;
  for (int64_t pair = static_cast<int64_t>(block_index_x()) * kWavesPerBlock + wave_index();
       pair < pairs; pair += static_cast<int64_t>(grid_blocks) * kWavesPerBlock) {
    const int token = static_cast<int>(pair / heads), head = static_cast<int>(pair % heads);
    int lo = 0, hi = batch - 1;  // the last request starting at or before token
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.qo_indptr[mid] <= token) lo = mid; else hi = mid - 1;
    }
    const int base = requests[pi::kRequestFields * lo + pi::kPartialBase];
    if (base < 0) continue;
    const int splits = requests[pi::kRequestFields * lo + pi::kNumSplits];
    const int qo_len = p.qo_indptr[lo + 1] - p.qo_indptr[lo];
    const int i = token - p.qo_indptr[lo];
    float m = neg_inf;
    for (int s = 0; s < splits; ++s) {
      m = max_f32(m, p.partial_lse[static_cast<int64_t>(base + s * qo_len + i) * heads + head]);
    }
    float acc[kVecsPerLane][4] = {};
    float sum = 0.0f;
    if (m != neg_inf) {
      for (int s = 0; s < splits; ++s) {
        const int64_t prow = static_cast<int64_t>(base + s * qo_len + i) * heads + head;
        const float w = fast_exp2(p.partial_lse[prow] - m);
        if (w == 0.0f) continue;
        sum += w;
        const float* src = p.partial_o + prow * kHeadDim;
#pragma unroll
        for (int c = 0; c < kVecsPerLane; ++c) {
          const int d = 4 * (c * kWaveSize + lane);
          if (d < kHeadDim) {
#pragma unroll
            for (int x = 0; x < 4; ++x) acc[c][x] += w * src[d + x];
          }
        }
      }
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    T* dst = static_cast<T*>(p.o) + static_cast<int64_t>(token) * p.o_stride_token +
             static_cast<int64_t>(head) * p.o_stride_head;
#pragma unroll
    for (int c = 0; c < kVecsPerLane; ++c) {
      const int d = 4 * (c * kWaveSize + lane);
      if (d < kHeadDim) {
        uint32_t* out = reinterpret_cast<uint32_t*>(dst + d);
        out[0] = pack2<T>(acc[c][0] * inv, acc[c][1] * inv);
        out[1] = pack2<T>(acc[c][2] * inv, acc[c][3] * inv);
      }
    }
    if (lane == 0 && p.lse != nullptr) {
      p.lse[static_cast<int64_t>(token) * heads + head] = sum > 0.0f ? m + fast_log2(sum) : neg_inf;
    }
  }
}

// Combines the kv chunks of a split single-request launch (single_prefill_split.h): one thread
// per 16-byte chunk of a (token, head) row, the kv chunks' partial rows loaded 8 at a time before
// any is used (a row at a time per wave left the merge a chain of dependent loads); a tile of
// one chunk is copied.
template <typename T, int kHeadDim>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMergeThreads)
    merge_split_tiles_kernel(const PrefillParams p, int tile_rows, int kv_tile, int grid_blocks) {
  namespace ss = flashinfer_ops::single_split;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  constexpr int kGroup = 8;  // chunks loaded before any is used
  const int heads = p.num_qo_heads;
  const int group = heads / p.num_kv_heads;
  const ss::Geometry g = single_geometry(p, group, tile_rows, kv_tile);
  const int64_t rows = static_cast<int64_t>(p.qo_len) * heads;  // partial rows per chunk
  const float neg_inf = -__builtin_huge_valf();
  for (int64_t item = static_cast<int64_t>(block_index_x()) * kMergeThreads + thread_index_x();
       item < rows * kChunks; item += static_cast<int64_t>(grid_blocks) * kMergeThreads) {
    const int64_t row = item / kChunks;
    const int col = static_cast<int>(item % kChunks) * 8;
    const int token = static_cast<int>(row / heads), head = static_cast<int>(row % heads);
    const int tile = (token * group + head % group) / tile_rows;
    const int chunks = ss::tile_chunks(ss::range_tiles(ss::tile_kv_range(g, tile), kv_tile), p.kv_chunk_tiles);
    const T* src = static_cast<const T*>(p.split_o) + row * kHeadDim + col;
    float m = neg_inf;
    for (int s = 0; s < chunks; ++s) m = max_f32(m, p.partial_lse[row + s * rows]);
    float acc[8] = {};
    float sum = 0.0f;
    if (m != neg_inf) {
      for (int s0 = 0; s0 < chunks; s0 += kGroup) {
        Chunk16 part[kGroup];
        float w[kGroup];
#pragma unroll
        for (int j = 0; j < kGroup; ++j) {
          if (s0 + j < chunks) {
            part[j] = *reinterpret_cast<const Chunk16*>(src + (s0 + j) * rows * kHeadDim);
            w[j] = fast_exp2(p.partial_lse[row + (s0 + j) * rows] - m);
          }
        }
#pragma unroll
        for (int j = 0; j < kGroup; ++j) {
          if (s0 + j < chunks) {
            sum += w[j];
            const T* e = reinterpret_cast<const T*>(&part[j]);
#pragma unroll
            for (int x = 0; x < 8; ++x) acc[x] += w[j] * to_float(e[x]);
          }
        }
      }
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    Chunk16 out;
#pragma unroll
    for (int w = 0; w < 4; ++w) out.w[w] = pack2<T>(acc[2 * w] * inv, acc[2 * w + 1] * inv);
    *reinterpret_cast<Chunk16*>(static_cast<T*>(p.o) + static_cast<int64_t>(token) * p.o_stride_token +
                                static_cast<int64_t>(head) * p.o_stride_head + col) = out;
    if (col == 0 && p.lse != nullptr) p.lse[row] = sum > 0.0f ? m + fast_log2(sum) : neg_inf;
  }
}

}  // namespace tfo::kernels::prefill
