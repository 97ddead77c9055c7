// Batch / single decode on the vector units (use_tensor_cores=False).
//
// A block of kDecodeThreads threads takes one task at a time (decode_common.h). Each kv row is
// spread over kTx = D/8 lanes, 8 elements per lane, so a block covers kRowsPerStep rows side by
// side and kUnroll rows deep: every thread has kUnroll K and V loads in flight before it
// computes. Each row-slot (ty) keeps its own online-softmax state (m, l, acc) for the G query
// heads of the tile over the rows it visits, so the main loop has no barrier; the slots merge
// through shared memory at the end.
//
//   scores (base 2):  s[g] = sum over the kTx lanes of q[g][8 lanes' d] . k[d]   (q pre-scaled)
//   online softmax:   m' = max(m, s), acc = acc * 2^(m - m') + 2^(s - m') v, where m' stays m
//                     while s passes m by no more than online_softmax.h's slack
#include <cstddef>

#include "decode_common.h"
#include "split_merge.h"
#include "../online_softmax.h"

namespace tfo::kernels {

inline constexpr int kDecodeThreads = 128;

// The 4-row tile (GQA groups of 2-4 heads; FP8 MHA) at four blocks per multiprocessor
// (kFourBlocks): capped at 128 registers where the cap takes effect (NVIDIA), so four blocks share
// a multiprocessor instead of three (167 registers at d128): its rows run 3 deep instead of 4 and
// are held as page id and slot instead of two 64-bit offsets, which keeps the cap without
// spills. A multiprocessor keeps the same bytes in flight, but a third more tasks run at once and
// the grid's rounds fall. Measured on an H100 against three blocks: FP8 caches 0.80-0.90 of the
// time at batch 64-128 kv 1k-2k, 0.96-0.99 at kv 4k-16k, batch 1 1.03-1.05 (a step of 3 rows is
// one more memory round trip per 3 rows), so FP8 caches take it always; 16-bit caches 0.90-0.97 at
// batch 64-128 kv 1k-4k (unsplit tasks of one to three rounds of the 3-block grid) but 1.10-1.16
// at batch 1 and 1.02-1.03 at kv 16k, so they take it only where the launch asks for it
// (launch_family, plan()'s deal_decode_tasks).
template <typename KV, int G>
inline constexpr bool kSimtFourBlocksDefault = kMinBlocksCapsRegisters && kIsFp8<KV> && G == 4;

// Rows each thread has in flight per step (K and V loads issued before any math).
template <int G, bool kFourBlocks>
struct SimtUnroll {
  static constexpr int value = G >= 8 ? 2 : (kFourBlocks ? 3 : 4);
};

// 16-byte aligned: the merge reads the row-slots' outputs 4 floats at a time.
template <int D, int G>
struct alignas(16) SimtMergeSmem {
  static constexpr int kTx = D / 8;
  static constexpr int kRowsPerStep = kDecodeThreads / kTx;
  float m[kRowsPerStep][G];
  float l[kRowsPerStep][G];
  float o[kRowsPerStep][G][D];
};

// A row a thread loads: its K and V offsets, or (kPageSlot) its page id and slot, whose offsets
// are formed at the load (two registers a row instead of four).
template <bool kPageSlot>
struct SimtRow {
  KvOffsets off;
};
template <>
struct SimtRow<true> {
  int32_t page, slot;
};

template <bool kPageSlot>
TFO_INLINE SimtRow<kPageSlot> simt_row(const DecodeParams& p, const int32_t* pages, int32_t pos, int32_t kv_head) {
  if constexpr (kPageSlot) {
    const PageSlot at = page_slot(pos, p.page_div);
    return {pages[at.page], at.slot};
  } else {
    return {kv_offsets(p, pages, pos, kv_head)};
  }
}

template <bool kPageSlot>
TFO_INLINE KvOffsets simt_row_offsets(const DecodeParams& p, const SimtRow<kPageSlot>& row, int32_t kv_head) {
  if constexpr (kPageSlot) {
    const int64_t page = row.page;
    return {page * p.k_stride_page + static_cast<int64_t>(row.slot) * p.k_stride_token + kv_head * p.k_stride_head,
            page * p.v_stride_page + static_cast<int64_t>(row.slot) * p.v_stride_token + kv_head * p.v_stride_head};
  } else {
    return row.off;
  }
}

// The rows a thread loads in the step starting at base; rows past the range reload the last row
// (no branch), their scores are masked.
template <int kUnroll, int kRowsPerStep, bool kPageSlot>
TFO_INLINE void step_rows(const DecodeParams& p, const int32_t* pages, int32_t base, int32_t kv_hi, int ty,
                          int32_t kv_head, SimtRow<kPageSlot>* rows) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int32_t pos = base + u * kRowsPerStep + ty;
    rows[u] = simt_row<kPageSlot>(p, pages, pos < kv_hi ? pos : kv_hi - 1, kv_head);
  }
}

template <typename T, typename KV, int D, int G, bool kFourBlocks = kSimtFourBlocksDefault<KV, G>>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS_MIN_BLOCKS(kDecodeThreads, (kFourBlocks ? 4 : 0))
    decode_simt_kernel(const DecodeParams p) {
  static_assert(!kFourBlocks || G == 4, "four blocks per multiprocessor: the 4-row tile");
  constexpr int kVec = 8;
  constexpr int kTx = D / kVec;
  constexpr int kRowsPerStep = kDecodeThreads / kTx;
  constexpr int kUnroll = SimtUnroll<G, kFourBlocks>::value;
  constexpr int kStep = kRowsPerStep * kUnroll;
  static_assert(kTx <= kWaveSize && kDecodeThreads % kTx == 0, "a row's lanes share one wave");

  using MergeSmem = SimtMergeSmem<D, G>;
  static_assert(offsetof(MergeSmem, o) % 16 == 0, "16-byte reads of the row-slots' outputs");
  TFO_SHARED MergeSmem smem;
  const int tid = thread_index_x();
  const int tx = tid % kTx;
  const int ty = tid / kTx;

  const ScheduleHeader schedule = schedule_header(p);  // before the wait (decode_common.h)
  const int32_t num_tasks = schedule.num_items * p.num_kv_heads * p.head_slices;
  for (int32_t task = block_index_x(); task < num_tasks; task += p.num_blocks) {
    namespace tl = flashinfer_ops::timeline;
    const TaskTimeline timeline = task_timeline(p, task);  // a profiling build's (task_timeline.h)
    const TaskHeads t = decode_task(p, schedule_item(p, task_item(p, task)), task, G);
    grid_dependency_wait();  // q, the cache and the index arrays may come from the launch before
    timeline.stamp(tl::kWaitDone);
    const int32_t req = t.item.request;
    const int32_t kv_len = request_kv_len_from_index_arrays(p, req);
    int32_t kv_lo = t.item.kv_begin;
    const int32_t kv_hi = t.item.kv_end < kv_len ? t.item.kv_end : kv_len;
    if (p.window_left >= 0 && kv_len - 1 - p.window_left > kv_lo) kv_lo = kv_len - 1 - p.window_left;

    float q[G][kVec];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g < t.num_heads) {
        load_t8_float(static_cast<const T*>(p.q) + static_cast<int64_t>(req) * p.q_stride_batch +
                          (t.first_head + g) * p.q_stride_head + tx * kVec,
                      p.q_scale, q[g]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) q[g][i] = 0.f;
      }
    }

    const int32_t* pages = request_pages(p, req, -1);  // from kv_indptr (decode_common.h)
    float m[G], l[G], acc[G][kVec];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      m[g] = kNegInf;
      l[g] = 0.f;
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[g][i] = 0.f;
    }

    // The page-table lookups of a step are made one step ahead, while the previous step's K/V
    // loads are in flight, so the dependent index read stays off the critical path.
    constexpr bool kPageSlot = kFourBlocks;
    SimtRow<kPageSlot> rows[kUnroll];
    if (kv_lo < kv_hi) step_rows<kUnroll, kRowsPerStep>(p, pages, kv_lo, kv_hi, ty, t.kv_head, rows);
    for (int32_t base = kv_lo; base < kv_hi; base += kStep) {
      KvVec8<KV> kreg[kUnroll], vreg[kUnroll];
      bool valid[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        valid[u] = base + u * kRowsPerStep + ty < kv_hi;
        const KvOffsets off = simt_row_offsets(p, rows[u], t.kv_head);
        kreg[u] = load_kv8<KV>(p.k, off.k + tx * kVec);
        vreg[u] = load_kv8<KV>(p.v, off.v + tx * kVec);
      }
      if (base + kStep < kv_hi) {
        step_rows<kUnroll, kRowsPerStep>(p, pages, base + kStep, kv_hi, ty, t.kv_head, rows);
      }
      float s[kUnroll][G];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float kf[kVec];
        kv8_to_float<KV>(kreg[u], kf);
        if (u == 0 && base == kv_lo) timeline.stamp(tl::kFirstTile);  // thread 0's first rows landed
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float dot = 0.f;
#pragma unroll
          for (int i = 0; i < kVec; ++i) dot += q[g][i] * kf[i];
          s[u][g] = group_sum<kTx>(dot);
          if constexpr (!kSimtSoftCapPerBlock) {
            s[u][g] = valid[u] ? soft_cap_score(s[u][g], p.cap_log2) : kNegInf;
          }
        }
      }
      if constexpr (kSimtSoftCapPerBlock) {
        soft_cap_scores<kUnroll * G>(&s[0][0], p.cap_log2);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
          for (int g = 0; g < G; ++g) s[u][g] = valid[u] ? s[u][g] : kNegInf;
        }
      }
      // With kSimtRescaleVote the running maximum moves only past online_softmax.h's slack and
      // the accumulators are rescaled only when some lane's maximum moved (one wave-uniform
      // test); otherwise on every step, against the true maximum.
      float rescale[G];
      bool unchanged = true;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float block_max = s[0][g];
#pragma unroll
        for (int u = 1; u < kUnroll; ++u) block_max = max_f32(block_max, s[u][g]);
        const float m_new = kSimtRescaleVote ? next_running_max(m[g], block_max) : max_f32(m[g], block_max);
        const float m_use = max_f32(m_new, kMaxFloor);
        const bool same = m_new == m[g];
        rescale[g] = kSimtRescaleVote && same ? 1.0f : fast_exp2(m[g] - m_use);
        unchanged = unchanged && same;
        m[g] = m_new;
        l[g] *= rescale[g];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) s[u][g] = fast_exp2(s[u][g] - m_use);
      }
      if (!kSimtRescaleVote || !wave_all(unchanged)) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[g][i] *= rescale[g];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float vf[kVec];
        kv8_to_float<KV>(vreg[u], vf);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float pu = s[u][g];
          l[g] += pu;
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[g][i] += pu * vf[i];
        }
      }
    }

    timeline.stamp(tl::kTilesDone);  // thread 0's rows (no barrier here)
    // Merge the row-slots.
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) smem.o[ty][g][tx * kVec + i] = acc[g][i];
      if (tx == 0) {
        smem.m[ty][g] = m[g];
        smem.l[ty][g] = l[g];
      }
    }
    block_sync();
    combine_slots8<T, D, kRowsPerStep, kDecodeThreads>(p, t, &smem.m[0][0], &smem.l[0][0], &smem.o[0][0][0], G,
                                                       p.v_scale, tid);
    timeline.stamp(tl::kCombined);
    finish_split_task<T, kDecodeThreads / kWaveSize, D>(p, schedule, t);
    timeline.end(tl::kFinished);
    block_sync();
  }
  grid_dependents_launch();  // this block's stores are issued
}

// Merges the splits of every split request after a decode launch without split counters
// (split_merge.h): one wave per (request, query head).
inline constexpr int kMergeWaves = 4;

template <typename T>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMergeWaves* kWaveSize)
    decode_merge_kernel(const DecodeParams p, int32_t batch, int32_t head_dim) {
  grid_dependency_wait();  // the decode launch's partial rows
  const int32_t row = block_index_x() * kMergeWaves + wave_index();
  if (row >= batch * p.num_qo_heads) return;
  const int32_t req = row / p.num_qo_heads;
  const int32_t head = row % p.num_qo_heads;
  int32_t base, splits;
  schedule_request(p, schedule_header(p), req, base, splits);
  if (base < 0) return;
  merge_split_row<T>(p, req, head, base, splits, head_dim);
}

// The group tile a GQA group of group_size heads runs with: 1 (MHA, 16-bit KV), 4 or 8 (larger
// groups run in slices of 8). FP8 MHA takes the 4-row tile: its 1-row instance overran AMD's
// scalar registers.
template <bool kFp8>
inline constexpr int simt_group_tile(int group_size) {
  return group_size == 1 && !kFp8 ? 1 : (group_size <= 4 ? 4 : 8);
}

// The instantiations: q/o type x KV storage x head dim x group tile.
#define TFO_DECODE_SIMT_G(T, KV, D)                                            \
  template TFO_GLOBAL void decode_simt_kernel<T, KV, D, 4>(const DecodeParams); \
  template TFO_GLOBAL void decode_simt_kernel<T, KV, D, 8>(const DecodeParams);
#define TFO_DECODE_SIMT_KV(T, D)                                                \
  template TFO_GLOBAL void decode_simt_kernel<T, T, D, 1>(const DecodeParams); \
  TFO_DECODE_SIMT_G(T, T, D)                                                    \
  TFO_IF_MIN_BLOCKS_CAP(template TFO_GLOBAL void decode_simt_kernel<T, T, D, 4, true>(const DecodeParams);) \
  TFO_DECODE_SIMT_G(T, Fp8E4M3, D)                                              \
  TFO_DECODE_SIMT_G(T, Fp8E5M2, D)

#if defined(TFO_DTYPE_F16)
template TFO_GLOBAL void decode_merge_kernel<half_t>(const DecodeParams, int32_t, int32_t);
#if defined(TFO_HEAD_DIM_64)
TFO_DECODE_SIMT_KV(half_t, 64)
#endif
#if defined(TFO_HEAD_DIM_128)
TFO_DECODE_SIMT_KV(half_t, 128)
#endif
#if defined(TFO_HEAD_DIM_256)
TFO_DECODE_SIMT_KV(half_t, 256)
#endif
#endif
#if defined(TFO_DTYPE_BF16)
template TFO_GLOBAL void decode_merge_kernel<bf16_t>(const DecodeParams, int32_t, int32_t);
#if defined(TFO_HEAD_DIM_64)
TFO_DECODE_SIMT_KV(bf16_t, 64)
#endif
#if defined(TFO_HEAD_DIM_128)
TFO_DECODE_SIMT_KV(bf16_t, 128)
#endif
#if defined(TFO_HEAD_DIM_256)
TFO_DECODE_SIMT_KV(bf16_t, 256)
#endif
#endif

#undef TFO_DECODE_SIMT_KV
#undef TFO_DECODE_SIMT_G

}  // namespace tfo::kernels
