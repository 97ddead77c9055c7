// Combining the partial results of a request split over several kv chunks (base-2 lse weights):
//   lse = log2(sum_s 2^lse_s),   o = sum_s 2^(lse_s - lse) o_s
// The partial rows were stored by other blocks, so they are read with coherent loads.
//
// Two ways to run it. In the launch (NVIDIA, batch decode when the split groups fit in one round
// of the grid): a split request's tasks count their arrivals per (request, kv head, head slice)
// in p.split_counters, and the block that stores the last split merges the splits of its query
// heads and resets the counter to zero for the next launch (the workspace zeroes the counters
// once; a captured graph's replays keep them at zero). Otherwise (no counters: single decode,
// larger batches, AMD) decode_merge_kernel merges every split request after the decode launch.
#pragma once

#include "decode_common.h"
#include "gpu_iface/atomics.h"

namespace tfo::kernels {

// Where the decode kernels merge in the launch. Not on AMD: there they hold their parameters in
// all 106 scalar registers, and the in-launch merge spilled 36-60 more in every instantiation
// (gfx942 and gfx950, clang-22), so splits merge in a second launch (the bindings read this).
inline constexpr bool kMergeSplitsInLaunch = kWaveSize == 32;

// One wave merges the splits of (request req, query head `head`): the lanes read different
// splits' lse at once (wave reductions give the max and the sum), then each lane accumulates 4
// consecutive dims over the splits with the loads of several splits in flight (a chain of one
// latency per split otherwise).
template <typename T>
TFO_DEVICE void merge_split_row(const DecodeParams& p, int32_t req, int32_t head, int32_t base,
                                int32_t splits, int32_t head_dim) {
  const int lane = lane_id();
  const int32_t H = p.num_qo_heads;
  const float* lse = p.partial_lse + static_cast<int64_t>(base) * H + head;  // split s at s * H
  float m_all = kNegInf;
  for (int32_t s = lane; s < splits; s += kWaveSize) m_all = max_f32(m_all, load_coherent_f32(lse + s * H));
  m_all = group_max<kWaveSize>(m_all);
  float l_all = 0.f;
  if (m_all != kNegInf) {
    for (int32_t s = lane; s < splits; s += kWaveSize) l_all += fast_exp2(load_coherent_f32(lse + s * H) - m_all);
  }
  l_all = group_sum<kWaveSize>(l_all);
  const float inv_l = l_all > 0.f ? 1.f / l_all : 0.f;
  const float* part = p.partial_o + (static_cast<int64_t>(base) * H + head) * head_dim;  // split s at s * H * head_dim
  const int64_t split_stride = static_cast<int64_t>(H) * head_dim;
  T* out = static_cast<T*>(p.o) + static_cast<int64_t>(req) * p.o_stride_batch + head * p.o_stride_head;
  for (int32_t d = 4 * lane; d < head_dim; d += 4 * kWaveSize) {  // head_dim: a multiple of 8
    float o[4] = {0.f, 0.f, 0.f, 0.f};
    if (m_all != kNegInf) {
#pragma unroll 4
      for (int32_t s = 0; s < splits; ++s) {
        const Float4 x = load_coherent_f32x4(part + s * split_stride + d);
        const float w = fast_exp2(load_coherent_f32(lse + s * H) - m_all);
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i] += w * x.v[i];
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) out[d + i] = from_float<T>(o[i] * inv_l);
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[static_cast<int64_t>(req) * H + head] = l_all > 0.f ? m_all + log2_f32(l_all) : kNegInf;
  }
}

// A task of a split request counts its arrival; the block whose arrival completes the count
// merges the request's splits for the task's query heads (its kWaves waves take a head each in
// turn). Block-uniform: every thread takes the same branches.
template <typename T, int kWaves>
TFO_DEVICE void finish_split_task_in_launch(const DecodeParams& p, const TaskHeads& t, int32_t head_dim) {
  if (p.split_counters == nullptr || t.item.partial_row < 0) return;
  TFO_SHARED int32_t completes;  // the count's verdict, broadcast to the block
  const int32_t req = t.item.request;
  int32_t base, splits;
  schedule_request(p, req, base, splits);
  int32_t* counter = p.split_counters + static_cast<int64_t>(req) * p.num_kv_heads * p.head_slices + t.slot;
  device_fence();  // this thread's partial rows, visible before the arrival is counted
  block_sync();
  if (thread_index_x() == 0) {
    completes = atomic_add_device(counter, 1) == splits - 1;
    if (completes) *counter = 0;  // every split has arrived: nothing else touches it this launch
  }
  block_sync();
  if (!completes) return;
  device_fence();  // the other splits' rows, stored before their arrivals
  for (int32_t row = wave_index(); row < t.num_heads; row += kWaves) {
    merge_split_row<T>(p, req, t.first_head + row, base, splits, head_dim);
  }
}

// Called by every thread of a decode block once its task's outputs are stored.
template <typename T, int kWaves>
TFO_DEVICE void finish_split_task(const DecodeParams& p, const TaskHeads& t, int32_t head_dim) {
  if constexpr (kMergeSplitsInLaunch) finish_split_task_in_launch<T, kWaves>(p, t, head_dim);
}

}  // namespace tfo::kernels
