// Combining the partial results of a request split over several kv chunks (base-2 lse weights):
//   lse = log2(sum_s 2^lse_s),   o = sum_s 2^(lse_s - lse) o_s
// The partial rows were stored by other blocks, so they are read with coherent loads.
//
// Three ways to run it. In the launch (NVIDIA, batch decode when the split groups fit in one
// round of the grid): a split request's tasks count their arrivals per (request, kv head, head
// slice) in p.split_counters, and the block that stores the last split merges the splits of its
// query heads and resets the counter to zero for the next launch (the workspace zeroes the
// counters once; a captured graph's replays keep them at zero). Or, where every block of the
// launch is resident at once and takes one task (p.merge_words: the wide shape's cooperative
// launch), by words: each split stores its output as words that carry their own lse and flag,
// and every split's block merges its share of the outputs, polling the words until they are
// full (merge_split_words); no count, fence or single merging block lies on the chain (batch 1
// kv 4k's shape timed apart, benchmarks/split_merge_probe.cu: 0.8 us over the bare reads,
// against 2.5 for the count; in the decode launch 0.75 us less than the count at batch 1 kv 4k,
// H100). Otherwise (single decode, larger batches, AMD) decode_merge_kernel merges every split
// request after the decode launch.
#pragma once

#include "decode_common.h"
#include "gpu_iface/atomics.h"

namespace tfo::kernels {

// Where the decode kernels merge in the launch. Not on AMD: there they hold their parameters in
// all 106 scalar registers, and the in-launch merge spilled 36-60 more in every instantiation
// (gfx942 and gfx950, clang-22), so splits merge in a second launch (the bindings read this).
inline constexpr bool kMergeSplitsInLaunch = kWaveSize == 32;

inline constexpr int kMergeLoadsInFlight = flashinfer_ops::plan_info::kMergeRowsInFlight;
static_assert(kWaveSize % kMergeLoadsInFlight == 0, "a group of splits lies within one chunk of kWaveSize");
inline constexpr int kMergeMaxHeadDim = 256;

// One wave merges the splits of (request req, query head `head`). The splits' lse are read once,
// a lane's split each (lane s: splits s, s + kWaveSize, ...), and the wave reduces them to the
// max and the sum of the weights; lane s keeps its weight, and the loop over the splits takes it
// by shuffle, so that loop's only loads are the partial rows, kMergeLoadsInFlight of them issued
// before the first is used. (A lse load per split beside each row load made every split a round
// trip: 2 + splits / 4 dependent rounds of L2 latency for one head at batch 1.)
// kFirstRowsWithLse: the first group's rows are issued with the lse loads (the weights need
// every lse first, the rows do not), so that group costs no round trip of its own, for 32
// registers more while the lse are reduced: taken by the merge inside the decode launch, whose
// round trips lengthen the launch at small batches; not the merge launch (decode_merge_kernel),
// whose registers it would raise (gfx942: 100 VGPRs against 68, 4 waves per SIMD against 7).
// kMaxHeadDim bounds head_dim (the registers of a lane's rows).
template <typename T, int kMaxHeadDim = kMergeMaxHeadDim, bool kFirstRowsWithLse = false>
TFO_DEVICE void merge_split_row(const DecodeParams& p, int32_t req, int32_t head, int32_t base,
                                int32_t splits, int32_t head_dim) {
  static_assert(kMaxHeadDim <= kMergeMaxHeadDim, "merge rows past kMergeMaxHeadDim");
  const int lane = lane_id();
  const int32_t H = p.num_qo_heads;
  const float* lse = p.partial_lse + static_cast<int64_t>(base) * H + head;  // split s at s * H
  const float* part = p.partial_o + (static_cast<int64_t>(base) * H + head) * head_dim;  // split s at s * H * head_dim
  const int64_t split_stride = static_cast<int64_t>(H) * head_dim;
  // A lane's 4 consecutive dims per pass of the wave over the row (head_dim: a multiple of 8).
  // Lanes past the row read its first dims (a valid address) and keep nothing, so every lane
  // runs the loop and its shuffles.
  constexpr int kPasses = (kMaxHeadDim + 4 * kWaveSize - 1) / (4 * kWaveSize);
  // Groups of kMergeLoadsInFlight splits, their rows loaded first. A group's slots past the
  // chunk of kWaveSize splits read its last split again and weigh it by 0 (lanes past the
  // splits hold weight 0; kWaveSize is a multiple of the group, so the shuffles stay within the
  // wave).
  auto load_group = [&](Float4 (&x)[kMergeLoadsInFlight], const float* part_c, int32_t s0, int32_t n, int pass) {
    const int32_t d = pass * 4 * kWaveSize + 4 * lane;
    const int32_t d_read = d < head_dim ? d : 0;
#pragma unroll
    for (int u = 0; u < kMergeLoadsInFlight; ++u) {
      const int32_t s = s0 + u < n ? s0 + u : n - 1;
      x[u] = load_coherent_f32x4(part_c + s * split_stride + d_read);
    }
  };
  // The first pass's first group (a second pass's would take 32 registers more).
  Float4 first[kFirstRowsWithLse ? kMergeLoadsInFlight : 1];
  if constexpr (kFirstRowsWithLse) load_group(first, part, 0, splits < kWaveSize ? splits : kWaveSize, 0);
  const float lse_first = lane < splits ? load_coherent_f32(lse + lane * H) : kNegInf;
  float m_all = lse_first;
  for (int32_t s = lane + kWaveSize; s < splits; s += kWaveSize) m_all = max_f32(m_all, load_coherent_f32(lse + s * H));
  m_all = group_max<kWaveSize>(m_all);
  const bool empty = m_all == kNegInf;  // no split saw a key (wave-uniform): the row is zero
  float o[kPasses][4] = {};
  auto accumulate = [&](const Float4 (&x)[kMergeLoadsInFlight], float w_lane, int32_t s0, int pass) {
#pragma unroll
    for (int u = 0; u < kMergeLoadsInFlight; ++u) {
      const float w = shfl_idx(w_lane, s0 + u);
#pragma unroll
      for (int i = 0; i < 4; ++i) o[pass][i] += w * x[u].v[i];
    }
  };
  // The first kWaveSize splits' weights; the first group's rows, where loaded above, are used
  // up before the loop, whose own loads then take their registers.
  const float w_first = empty ? 0.f : fast_exp2(lse_first - m_all);  // 0 for lanes past the splits
  if constexpr (kFirstRowsWithLse) accumulate(first, w_first, 0, 0);
  constexpr int32_t kFirstDone = kFirstRowsWithLse ? kMergeLoadsInFlight : 0;  // splits of pass 0
  float l_lane = 0.f;
  for (int32_t c = 0; c < splits; c += kWaveSize) {
    const float w_lane = c == 0 ? w_first
                                : (c + lane < splits && !empty ? fast_exp2(load_coherent_f32(lse + (c + lane) * H) - m_all) : 0.f);
    l_lane += w_lane;
    const int32_t n = splits - c < kWaveSize ? splits - c : kWaveSize;
    const float* part_c = part + c * split_stride;
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      if (pass * 4 * kWaveSize >= head_dim) break;
      for (int32_t s0 = c == 0 && pass == 0 ? kFirstDone : 0; s0 < n; s0 += kMergeLoadsInFlight) {
        Float4 x[kMergeLoadsInFlight];
        load_group(x, part_c, s0, n, pass);
        accumulate(x, w_lane, s0, pass);
      }
    }
  }
  const float l_all = group_sum<kWaveSize>(l_lane);
  const float inv_l = l_all > 0.f ? 1.f / l_all : 0.f;
  T* out = static_cast<T*>(p.o) + static_cast<int64_t>(req) * p.o_stride_batch + head * p.o_stride_head;
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    const int32_t d = pass * 4 * kWaveSize + 4 * lane;
    if (d < head_dim) {
#pragma unroll
      for (int i = 0; i < 4; ++i) out[d + i] = from_float<T>(o[pass][i] * inv_l);
    }
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[static_cast<int64_t>(req) * H + head] = l_all > 0.f ? m_all + log2_f32(l_all) : kNegInf;
  }
}

// Whether finish_split_task runs a release for this task (a split counted in the launch): a
// load still in flight then holds up the release by its latency, so a block reads ahead only
// where this is false. Block-uniform.
TFO_INLINE bool split_task_releases(const DecodeParams& p, const TaskHeads& t) {
  return kMergeSplitsInLaunch && p.split_counters != nullptr && t.item.partial_row >= 0;
}

// A task of a split request counts its arrival; the block whose arrival completes the count
// merges the request's splits for the task's query heads (its kWaves waves take a head each in
// turn). Block-uniform: every thread takes the same branches. The arrival is one thread's
// acquire-release add after the block's barrier (atomics.h), where a fence in every thread
// before it waited for each thread's own stores in turn.
template <typename T, int kWaves, int kHeadDim>
TFO_DEVICE void finish_split_task_in_launch(const DecodeParams& p, const ScheduleHeader& schedule, const TaskHeads& t) {
  if (!split_task_releases(p, t)) return;
  TFO_SHARED int32_t completes;  // the count's verdict, broadcast to the block
  const int32_t req = t.item.request;
  int32_t base, splits;
  schedule_request(p, schedule, req, base, splits);
  int32_t* counter = p.split_counters + static_cast<int64_t>(req) * p.num_kv_heads * p.head_slices + t.slot;
  block_sync();  // the block's partial rows are stored: the arrival publishes them
  if (thread_index_x() == 0) completes = arrive_acq_rel_device(counter, 1) == splits - 1;
  block_sync();  // the verdict, and with it the other splits' rows, for every thread
  if (!completes) return;
  // The first group's rows with the lse where the decode kernels have the registers for them:
  // at head_dim 64 they sit just under 128 (four blocks of 128 threads a multiprocessor), and
  // the group's 32 registers pushed them into spills (sm_80 and sm_90a).
  constexpr bool kFirstRowsWithLse = kHeadDim > 64;
  for (int32_t row = wave_index(); row < t.num_heads; row += kWaves) {
    merge_split_row<T, kHeadDim, kFirstRowsWithLse>(p, req, t.first_head + row, base, splits, kHeadDim);
  }
  // Every split has arrived, so nothing else touches the counter this launch.
  if (thread_index_x() == 0) *counter = 0;
}

// Whether a launch merges its split tasks by words: p.merge_words given and no block with a
// second task (a block that waited for its own later task would wait forever). The binding
// gives the words only to a cooperative launch of one task a block; this guards any other plan.
TFO_INLINE bool merges_by_words(const DecodeParams& p, int32_t num_tasks) {
  return kMergeSplitsInLaunch && p.merge_words != nullptr && num_tasks <= p.num_blocks;
}

// Split words polled together: one round trip for up to this many splits of an output.
inline constexpr int kMergeWordsInFlight = 16;

// The words merge of a split task, after its block stored its own words (store_split_words8):
// split s of the request's `splits` (its partial row base + s) merges outputs [s * share, (s + 1)
// * share) of the task's query heads x head_dim, share = ceil(heads * head_dim / splits): a
// thread an output, polling its splits' words until every one is full, merging them online in
// groups of kMergeWordsInFlight, and zeroing each word it read for the next launch. Every word
// a launch stores is so read and zeroed by exactly one thread of the launch.
template <typename T, int kThreads, int kHeadDim>
TFO_DEVICE void merge_split_words(const DecodeParams& p, const ScheduleHeader& schedule, const TaskHeads& t) {
  const int32_t req = t.item.request;
  int32_t base, splits;
  schedule_request(p, schedule, req, base, splits);
  const int32_t outputs = t.num_heads * kHeadDim;
  const int32_t share = (outputs + splits - 1) / splits;
  const int32_t lo = (t.item.partial_row - base) * share;
  const int32_t hi = lo + share < outputs ? lo + share : outputs;
  const int64_t split_stride = static_cast<int64_t>(p.num_qo_heads) * kHeadDim;
  for (int32_t j = lo + thread_index_x(); j < hi; j += kThreads) {
    const int32_t head = t.first_head + j / kHeadDim, d = j % kHeadDim;
    uint64_t* words = split_words(p, base, head, kHeadDim) + d;
    float m = kNegInf, l = 0.f, o = 0.f;
    for (int32_t s0 = 0; s0 < splits; s0 += kMergeWordsInFlight) {
      // A group's slots past the splits read its last split again (a full word once that one
      // is), weigh nothing, and zero that word again.
      const int32_t last = splits - 1 - s0;
      uint64_t* at[kMergeWordsInFlight];
#pragma unroll
      for (int u = 0; u < kMergeWordsInFlight; ++u) at[u] = words + (s0 + (u < last ? u : last)) * split_stride;
      uint64_t w[kMergeWordsInFlight];
      bool full;
      do {  // the group's loads all issued before any is tested: one round trip a poll
#pragma unroll
        for (int u = 0; u < kMergeWordsInFlight; ++u) w[u] = load_word_relaxed(at[u]);
        full = true;
#pragma unroll
        for (int u = 0; u < kMergeWordsInFlight; ++u) full = full && split_word_full(w[u]);
      } while (!full);
#pragma unroll
      for (int u = 0; u < kMergeWordsInFlight; ++u) store_word_relaxed(at[u], 0);
      float m_group = kNegInf;
#pragma unroll
      for (int u = 0; u < kMergeWordsInFlight; ++u) m_group = max_f32(m_group, split_word_lse(w[u]));
      const float m_new = max_f32(m, m_group);
      if (m_new != kNegInf) {  // else every split so far saw no key
        const float rescale = fast_exp2(m - m_new);
        l *= rescale;
        o *= rescale;
#pragma unroll
        for (int u = 0; u < kMergeWordsInFlight; ++u) {
          const float weight = u <= last ? fast_exp2(split_word_lse(w[u]) - m_new) : 0.f;
          l += weight;
          o += weight * split_word_value(w[u]);
        }
        m = m_new;
      }
    }
    T* out = static_cast<T*>(p.o) + static_cast<int64_t>(req) * p.o_stride_batch + head * p.o_stride_head;
    out[d] = from_float<T>(l > 0.f ? o / l : 0.f);
    if (d == 0 && p.lse != nullptr) {
      p.lse[static_cast<int64_t>(req) * p.num_qo_heads + head] = l > 0.f ? m + log2_f32(l) : kNegInf;
    }
  }
}

// Called by every thread of a decode block once its task's outputs are stored.
template <typename T, int kWaves, int kHeadDim>
TFO_DEVICE void finish_split_task(const DecodeParams& p, const ScheduleHeader& schedule, const TaskHeads& t) {
  if constexpr (kMergeSplitsInLaunch) finish_split_task_in_launch<T, kWaves, kHeadDim>(p, schedule, t);
}

}  // namespace tfo::kernels
