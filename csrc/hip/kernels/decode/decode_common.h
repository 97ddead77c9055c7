// What the decode kernels share: the parameter block, the schedule they read on the device,
// paged-KV addressing and the 8-element KV loads.
//
// A decode task is (work item, kv head, head slice): the query heads of one kv head's GQA group
// (a slice of at most the kernel's group tile) against the item's kv range, so each K/V byte
// of a kv head is read once per item for all of its query heads. The grid is persistent and
// sized on the host from the device's capacity; blocks loop over the tasks found in the
// device-side schedule and exit when none is left, so a captured graph replays correctly for
// any later plan.
//
// Programmatic dependent launch (NVIDIA sm_90+): the schedule is plan()'s upload, a copy that
// no kernel writes, so a block reads its header and its task's item before grid_dependency_wait()
// (at batch 1 those dependent round trips were a large part of a launch's fixed cost). The items
// sit at a fixed offset and carry their request's kv length and first page offset (plan_info.h),
// so the tensor-core kernel reads its first item together with the header, one round trip, and
// its next task's item while the current one merges (schedule_item_ahead); q, the cache, the
// index arrays and the split counters may come from the launch before and are read after it. The next launch is let in as each block exits
// (launch_dependents), so its blocks read their schedule while this grid's last blocks finish.
// Not earlier: let in once a block's wait had returned, the next launch's blocks started beside
// this grid's, which took 0.5-0.6 us off batch 1 at kv 1k-4k but made it 13-25% slower at kv 16k
// (256 blocks, whose successor did not fit beside them); let in at the block's start, a chain of
// captured calls had every grid resident at once and batch 1 ran 5-26% slower at kv 4k-16k.
#pragma once

#include <cstdint>

#include "../../../include/plan_info.h"
#include "../page/page_divisor.h"
#include "../task_timeline.h"
#include "fp8.h"
#include "gpu_iface/atomics.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

// Build knobs (setup.py: TFO_HEAD_DIMS, TFO_DTYPES). Without any, everything is instantiated.
#if !defined(TFO_HEAD_DIM_64) && !defined(TFO_HEAD_DIM_128) && !defined(TFO_HEAD_DIM_256)
#define TFO_HEAD_DIM_64 1
#define TFO_HEAD_DIM_128 1
#define TFO_HEAD_DIM_256 1
#endif
#if !defined(TFO_DTYPE_F16) && !defined(TFO_DTYPE_BF16)
#define TFO_DTYPE_F16 1
#define TFO_DTYPE_BF16 1
#endif

namespace tfo::kernels {

using namespace tfo::gpu;

inline constexpr float kNegInf = -__builtin_huge_valf();
// The running maximum used to scale weights: with nothing visible yet it is -inf, and scaling
// by this floor instead keeps every 2^(s - m) (s = -inf) and every rescale factor at 0.
inline constexpr float kMaxFloor = -1e30f;

struct DecodeParams {
  // q [batch, num_qo_heads, head_dim]; o likewise (element strides).
  // Strides are int32 (checked on the host): fewer scalar registers on AMD.
  const void* q;
  int32_t q_stride_batch, q_stride_head;
  void* o;
  int32_t o_stride_batch, o_stride_head;
  float* lse;          // [batch, num_qo_heads] contiguous, or nullptr
  float* partial_o;    // [partial rows, num_qo_heads, head_dim]
  float* partial_lse;  // [partial rows, num_qo_heads]
  // [batch, num_kv_heads, head_slices] arrival counters of split tasks, zero between launches
  // (split_merge.h); nullptr: a separate merge launch combines the splits.
  int32_t* split_counters;
  // [partial rows, num_qo_heads, head_dim] words of split tasks' results, zero between launches,
  // for a launch whose every block is resident at once (a cooperative launch) and takes one task
  // (split_merge.h's merge_split_words); nullptr: the counters above, or the merge launch.
  uint64_t* merge_words;

  // K/V: element (page, slot, head, d) at page * stride_page + slot * stride_token +
  // head * stride_head + d. A single request is one page of kv_len tokens whose
  // id (0) kv_indices holds; kv_indptr and kv_last_page_len are then unused.
  const void* k;
  const void* v;
  int32_t k_stride_page, k_stride_token, k_stride_head;
  int32_t v_stride_page, v_stride_token, v_stride_head;
  PageDivisor page_div;  // the page size (.size) and the division by it
  const int32_t* kv_indptr;         // [batch + 1] page offsets (paged)
  const int32_t* kv_indices;        // page ids
  const int32_t* kv_last_page_len;  // [batch] (paged)

  // The schedule: plan_info (plan_info.h), or nullptr for a single request split arithmetically
  // into single_splits chunks of single_chunk tokens.
  const int32_t* plan;
  int32_t plan_item_slots;  // plan_info::item_slots of the plan's buffer (schedule_item_ahead)
  int32_t single_kv_len, single_chunk, single_splits;

  int32_t num_qo_heads, num_kv_heads, group_size, head_slices;
  int32_t num_blocks;  // the persistent grid

  int32_t window_left;  // -1: off
  float q_scale;        // applied to q.k: sm_scale*log2(e) (no cap) or sm_scale/cap, times k_scale
  float cap_log2;       // 0: no soft cap; else cap*log2(e): score = cap_log2 * tanh(q_scale * q.k)
  float v_scale;        // applied to the output
  int32_t kv_ocp_e4m3;  // 1: an OCP e4m3fn cache (not fnuz), which sm_89+ may widen in hardware
#if defined(TFO_TIMELINE)
  // A profiling build's launch timeline (task_timeline.h): timeline_tasks records, or null.
  int64_t* timeline;
  int32_t timeline_tasks;
#endif
};

// The timeline record of task `task` (a profiling build's; otherwise an empty object).
TFO_INLINE TaskTimeline task_timeline(const DecodeParams& p, int32_t task) {
#if defined(TFO_TIMELINE)
  return TaskTimeline(p.timeline, p.timeline_tasks, task);
#else
  return TaskTimeline(nullptr, 0, task);
#endif
}

// A work item (plan_info.h's ItemField) with its request's kv length and first page's place in
// kv_indices (page_base -1: not carried; request_pages then reads kv_indptr).
struct WorkItem {
  int32_t request, kv_begin, kv_end, partial_row, kv_len, page_base;
};

// The schedule's header words a block needs, read once per block and together.
struct ScheduleHeader {
  int32_t num_items, num_requests;
};

TFO_INLINE ScheduleHeader schedule_header(const DecodeParams& p) {
  using namespace flashinfer_ops::plan_info;
  if (p.plan != nullptr) return {p.plan[kNumItems], p.plan[kNumRequests]};
  return {p.single_splits, 1};
}

// Item i, i < the header's num_items. The items sit at a fixed offset (plan_info.h), so the read
// needs nothing of the header.
TFO_INLINE WorkItem schedule_item(const DecodeParams& p, int32_t i) {
  using namespace flashinfer_ops::plan_info;
  if (p.plan != nullptr) {
    const int32_t* item = p.plan + kHeaderSize + kItemFields * i;
    return {item[kRequest], item[kKvBegin], item[kKvEnd], item[kPartialRow], item[kKvLen], item[kPageBase]};
  }
  const int32_t begin = i * p.single_chunk;
  const int32_t end = begin + p.single_chunk < p.single_kv_len ? begin + p.single_chunk
                                                                : p.single_kv_len;
  return {0, begin, end, p.single_splits > 1 ? i : -1, p.single_kv_len, 0};
}

// Item i read before the item count is known (with the header, or for a block's next task while
// its current one ends): an index past the buffer's item slots reads the last slot instead, so
// the read stays inside the plan's buffer; what it reads past num_items is never used.
TFO_INLINE WorkItem schedule_item_ahead(const DecodeParams& p, int32_t i) {
  const bool in_slots = static_cast<uint32_t>(i) < static_cast<uint32_t>(p.plan_item_slots);
  return schedule_item(p, p.plan == nullptr || in_slots ? i : p.plan_item_slots - 1);
}

// (first partial row or -1, number of splits) of a request. Its place follows the items.
TFO_INLINE void schedule_request(const DecodeParams& p, const ScheduleHeader& h, int32_t r, int32_t& partial_base,
                                 int32_t& num_splits) {
  using namespace flashinfer_ops::plan_info;
  if (p.plan != nullptr) {
    const int32_t* req = p.plan + kHeaderSize + kItemFields * h.num_items + kRequestFields * r;
    partial_base = req[kPartialBase];
    num_splits = req[kNumSplits];
  } else {
    partial_base = p.single_splits > 1 ? 0 : -1;
    num_splits = p.single_splits;
  }
}

// A request's kv length from the index arrays, after the wait: its three loads issued together
// (the last page's length is read whether or not the request has pages, so it does not wait for
// the page count). The CUDA-core kernel takes its lengths and pages this way: given them from the
// schedule (WorkItem's kv_len, page_base), nvcc ordered its step differently (sm_90a: the step's 4 V loads issued
// a quarter of the way into it, behind the next step's page ids, instead of with its 4 K loads at
// the top: half the bytes in flight) and it ran 4-7% slower at batch 16-64 on an H200
// (docs/kernel_notes.md), where the tensor-core kernel gained 1-5%.
TFO_INLINE int32_t request_kv_len_from_index_arrays(const DecodeParams& p, int32_t r) {
  if (p.plan == nullptr) return p.single_kv_len;
  const int32_t first = p.kv_indptr[r], end = p.kv_indptr[r + 1], last = p.kv_last_page_len[r];
  const int32_t pages = end - first;
  return pages > 0 ? (pages - 1) * p.page_div.size + last : 0;
}

// The page ids of a request, after the wait (kv_indices may come from the launch before):
// kv_indptr[r] is read there unless page_base (the schedule's kPageBase) is given; -1 reads it.
TFO_INLINE const int32_t* request_pages(const DecodeParams& p, int32_t r, int32_t page_base) {
  if (p.plan == nullptr) return p.kv_indices;
  return p.kv_indices + (page_base >= 0 ? page_base : p.kv_indptr[r]);
}

// Element offsets of kv position pos of one request.
struct KvOffsets {
  int64_t k, v;
};

TFO_INLINE KvOffsets kv_offsets(const DecodeParams& p, const int32_t* pages, int32_t pos,
                                int32_t kv_head) {
  const PageSlot at = page_slot(pos, p.page_div);
  const int64_t page = pages[at.page];
  return {page * p.k_stride_page + static_cast<int64_t>(at.slot) * p.k_stride_token +
              kv_head * p.k_stride_head,
          page * p.v_stride_page + static_cast<int64_t>(at.slot) * p.v_stride_token +
              kv_head * p.v_stride_head};
}

// Eight consecutive KV elements: 16 bytes of a 16-bit type, 8 bytes of FP8.
template <typename KV>
struct alignas(sizeof(KV) * 8) KvVec8 {
  uint32_t w[sizeof(KV) * 2];
};

template <typename KV>
TFO_INLINE KvVec8<KV> load_kv8(const void* base, int64_t offset) {
  return *reinterpret_cast<const KvVec8<KV>*>(static_cast<const KV*>(base) + offset);
}

template <typename KV>
TFO_INLINE KvVec8<KV> zero_kv8() {
  KvVec8<KV> x;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(KV)) * 2; ++i) x.w[i] = 0u;
  return x;
}

// The eight elements as floats (FP8: before the decode factor, which the scales carry).
template <typename KV>
TFO_INLINE void kv8_to_float(const KvVec8<KV>& x, float* out) {
  if constexpr (kIsFp8<KV>) {
    fp8x4_to_float<KV>(x.w[0], out);
    fp8x4_to_float<KV>(x.w[1], out + 4);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = to_float(bits_to<KV>(static_cast<uint16_t>(x.w[i] & 0xffffu)));
      out[2 * i + 1] = to_float(bits_to<KV>(static_cast<uint16_t>(x.w[i] >> 16)));
    }
  }
}

// Eight consecutive 16-bit T elements (16 bytes) as floats.
template <typename T>
TFO_INLINE void load_t8_float(const T* src, float scale, float* out) {
  const KvVec8<T> x = *reinterpret_cast<const KvVec8<T>*>(src);
  kv8_to_float<T>(x, out);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] *= scale;
}

// tanh through exp2 (no math library call, so no call frame on either vendor): absolute error
// about 1e-7, far below the fp16 output's resolution once multiplied by the cap.
TFO_INLINE float tanh_approx(float x) {
  const float t = fast_exp2(2.8853900817779268f * (x < 0.f ? -x : x));  // e^(2|x|)
  const float r = 1.f - 2.f * fast_rcp(t + 1.f);
  return x < 0.f ? -r : r;
}

TFO_INLINE float soft_cap_score(float x, float cap_log2) {
  return cap_log2 > 0.f ? cap_log2 * tanh_approx(x) : x;
}

// The soft cap over a block of N scores behind one uniform test: a test per score splits the
// scores' computations into serial blocks (in the CUDA-core decode, each score's cross-lane
// reduction finishing before the next may start), where without it the compiler interleaves them.
template <int N>
TFO_INLINE void soft_cap_scores(float* x, float cap_log2) {
  if (cap_log2 > 0.f) {
#pragma unroll
    for (int i = 0; i < N; ++i) x[i] = cap_log2 * tanh_approx(x[i]);
  }
}

// Where the CUDA-core decode caps its scores: per block with 32-lane warps; per score with
// 64-lane waves, where those kernels already use all 106 scalar registers and the block's
// branch pushes some into spills.
inline constexpr bool kSimtSoftCapPerBlock = kWaveSize == 32;
// Whether the CUDA-core decode keeps a slack on its running maxima and skips the accumulators'
// rescale when none of the wave's moved (one vote per step): with 32-lane warps; 64-lane waves
// rescale every step, since the slack and the vote spill scalar registers there (gfx942, bf16
// queries on FP8 caches at head dim 256).
inline constexpr bool kSimtRescaleVote = kWaveSize == 32;

TFO_INLINE float log2_f32(float x) { return __builtin_log2f(x); }

// Eight consecutive outputs of one query head (columns d0 .. d0 + 7, d0 a multiple of 8), already
// normalised, stored as wide as their destination allows: a partial row (float32, rows of
// head_dim floats in a 16-byte aligned buffer) takes two 16-byte stores; o takes one 16-byte
// store where the address is 16-byte aligned, else element stores (o's rows may lie at any
// element stride).
template <typename T>
TFO_INLINE void store_output8(const DecodeParams& p, const WorkItem& it, int32_t head, int32_t d0,
                              const float* v, int head_dim) {
  if (it.partial_row >= 0) {
    Float4* dst = reinterpret_cast<Float4*>(
        p.partial_o + (static_cast<int64_t>(it.partial_row) * p.num_qo_heads + head) * head_dim + d0);
    dst[0] = Float4{{v[0], v[1], v[2], v[3]}};
    dst[1] = Float4{{v[4], v[5], v[6], v[7]}};
    return;
  }
  T* dst = static_cast<T*>(p.o) + static_cast<int64_t>(it.request) * p.o_stride_batch +
           head * p.o_stride_head + d0;
  if (reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
    KvVec8<T> packed;
#pragma unroll
    for (int e = 0; e < 4; ++e) packed.w[e] = pack2<T>(v[2 * e], v[2 * e + 1]);
    *reinterpret_cast<KvVec8<T>*>(dst) = packed;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = from_float<T>(v[i]);
  }
}

// A split task's output as merge words (DecodeParams::merge_words): each value beside its row's
// lse in one 64-bit word, the lse's bits inverted in the upper half so that a zeroed word reads
// as empty. Empty would be an lse of all-ones bits, a NaN that split_word never stores (a NaN lse
// is stored as 0x7fffffff), so every stored word reads as full.
TFO_INLINE uint32_t float_bits(float x) { return __builtin_bit_cast(uint32_t, x); }
TFO_INLINE float bits_float(uint32_t b) { return __builtin_bit_cast(float, b); }
TFO_INLINE uint64_t split_word(float value, float lse) {
  const uint32_t lse_bits = lse != lse ? 0x7fffffffu : float_bits(lse);
  return static_cast<uint64_t>(~lse_bits) << 32 | float_bits(value);
}
TFO_INLINE bool split_word_full(uint64_t w) { return (w >> 32) != 0; }
TFO_INLINE float split_word_lse(uint64_t w) { return bits_float(~static_cast<uint32_t>(w >> 32)); }
TFO_INLINE float split_word_value(uint64_t w) { return bits_float(static_cast<uint32_t>(w)); }

// The words of a split task's row (partial row, head) start here; split s of a request whose
// first partial row is base lies s * num_qo_heads * head_dim words after base's.
TFO_INLINE uint64_t* split_words(const DecodeParams& p, int32_t partial_row, int32_t head, int head_dim) {
  return p.merge_words + (static_cast<int64_t>(partial_row) * p.num_qo_heads + head) * head_dim;
}

// Eight outputs of a split task (columns d0 .. d0 + 7, normalised) and their row's lse as merge
// words: four 16-byte stores of two words each.
TFO_INLINE void store_split_words8(const DecodeParams& p, const WorkItem& it, int32_t head, int32_t d0,
                                   const float* v, float lse, int head_dim) {
  uint64_t* dst = split_words(p, it.partial_row, head, head_dim) + d0;
#pragma unroll
  for (int i = 0; i < 8; i += 2) store_words_relaxed(dst + i, split_word(v[i], lse), split_word(v[i + 1], lse));
}

TFO_INLINE void store_lse(const DecodeParams& p, const WorkItem& it, int32_t head, float lse) {
  if (it.partial_row >= 0) {
    p.partial_lse[static_cast<int64_t>(it.partial_row) * p.num_qo_heads + head] = lse;
  } else if (p.lse != nullptr) {
    p.lse[static_cast<int64_t>(it.request) * p.num_qo_heads + head] = lse;
  }
}

// Decomposes a task index; false when the slice holds no head of the group.
struct TaskHeads {
  WorkItem item;
  int32_t kv_head, first_head, num_heads;
  int32_t slot;  // kv_head * head_slices + slice: the task's place within its item
};

// The item a task belongs to: tasks are (item, kv head, head slice) in that order.
TFO_INLINE int32_t task_item(const DecodeParams& p, int32_t task) {
  return task / (p.num_kv_heads * p.head_slices);
}

TFO_INLINE TaskHeads decode_task(const DecodeParams& p, const WorkItem& item, int32_t task, int group_tile) {
  const int32_t per_item = p.num_kv_heads * p.head_slices;
  TaskHeads t;
  t.item = item;
  const int32_t rest = task % per_item;
  t.slot = rest;
  t.kv_head = rest / p.head_slices;
  const int32_t slice = rest % p.head_slices;
  t.first_head = t.kv_head * p.group_size + slice * group_tile;
  const int32_t left = p.group_size - slice * group_tile;
  t.num_heads = left < group_tile ? left : group_tile;
  return t;
}

// Where the partial output rows of a task's slots lie in shared memory (combine_slots8's o):
// column c of row r at at(r, c), rows of kRowFloats floats; a row's 8-column blocks from a
// multiple of 8 stay whole, so the combination reads each as two 16-byte loads. PlainRows: rows
// of D floats, as the CUDA-core kernel's row-slots write them (decode_mma.cu has AccRows).
template <int D>
struct PlainRows {
  static constexpr int kRowFloats = D;
  static TFO_INLINE int at(int row, int col) { return row * D + col; }
};

// The end of a decode task: kSlots partial softmax states (m, l, o, base 2) of each of the task's
// query heads, which the block's waves or row-slots left in shared memory (row r's slot s at
// m[s * slot_stride + r], l likewise, o's row s * slot_stride + r in the Rows layout above),
// combined and stored. A thread takes 8 columns of one row: the row's weights once, 16-byte
// shared reads (o 16-byte aligned), one wide store (store_output8); out_scale multiplies the
// normalised output. words: the task is a split one whose launch merges by words, which take
// its output and lse instead (store_split_words8).
template <typename T, int D, int kSlots, int kThreads, typename Rows = PlainRows<D>>
TFO_INLINE void combine_slots8(const DecodeParams& p, const TaskHeads& t, const float* m, const float* l,
                               const float* o, int slot_stride, float out_scale, int tid, bool words = false) {
  constexpr int kChunks = D / 8;
  for (int idx = tid; idx < t.num_heads * kChunks; idx += kThreads) {
    const int row = idx / kChunks, d0 = 8 * (idx % kChunks);
    float m_all = kNegInf;
#pragma unroll
    for (int s = 0; s < kSlots; ++s) m_all = max_f32(m_all, m[s * slot_stride + row]);
    float l_all = 0.f, o_all[8] = {};
    if (m_all != kNegInf) {
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        const float w = fast_exp2(m[s * slot_stride + row] - m_all);
        l_all += w * l[s * slot_stride + row];
        // A quarter warp's 16-byte loads take 8 consecutive blocks, and blocks 4 apart share
        // banks (rows start 128-byte lines; the swizzles move blocks by less than 4): the upper
        // four read their second half first, so that each load's 8 halves fall on distinct banks.
        const Float4* src = reinterpret_cast<const Float4*>(o + Rows::at(s * slot_stride + row, d0));
        const bool upper = (d0 >> 5) & 1;
        const Float4 first = src[upper ? 1 : 0], second = src[upper ? 0 : 1];
        const Float4 lo = upper ? second : first, hi = upper ? first : second;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          o_all[i] += w * lo.v[i];
          o_all[4 + i] += w * hi.v[i];
        }
      }
    }
    const float inv_l = l_all > 0.f ? out_scale / l_all : 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) o_all[i] *= inv_l;
    const auto lse = [&] { return l_all > 0.f ? m_all + log2_f32(l_all) : kNegInf; };  // where stored
    if (words) {  // a split task of a launch that merges by words (the caller's test)
      store_split_words8(p, t.item, t.first_head + row, d0, o_all, lse(), D);
      continue;
    }
    store_output8<T>(p, t.item, t.first_head + row, d0, o_all, D);
    if (d0 == 0) store_lse(p, t.item, t.first_head + row, lse());
  }
}

}  // namespace tfo::kernels
