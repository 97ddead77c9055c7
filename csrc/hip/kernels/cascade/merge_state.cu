// Merging attention states (v, s) on the GPU; s is the base-2 log-sum-exp of the logits that
// produced v, so for states over disjoint kv sets
//   s = log2(sum_i 2^s_i),   v = sum_i 2^(s_i - s) v_i.
// One wave per (sequence position, head); the lanes stride over head_dim. A position whose
// states all have s = -inf merges to v = 0, s = -inf.
#include <cstdint>
#include <type_traits>

#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

namespace tfo::kernels {

using namespace tfo::gpu;

inline constexpr int kMergeStateWaves = 4;
inline constexpr int kMergeStateThreads = kMergeStateWaves * kWaveSize;

// Element types of v: half_t, bf16_t or float.
template <typename T>
TFO_INLINE float value_to_float(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return to_float(x);
  }
}

template <typename T>
TFO_INLINE T value_from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return from_float<T>(x);
  }
}

// A [seq, heads, dim] state with element strides (dim contiguous) and its [seq, heads] lse.
template <typename T>
struct StateView {
  T* v;
  int64_t v_stride_seq, v_stride_head;
  float* s;
  int64_t s_stride_seq, s_stride_head;
};

// Two states into out (which may alias a: merge_state_in_place); rows whose mask entry is
// false are left as they are.
template <typename T>
struct MergeTwoParams {
  StateView<T> a, b, out;
  const bool* mask;  // [seq] or nullptr
  int32_t seq_len, num_heads, head_dim;
};

template <typename T>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMergeStateThreads) merge_two_states_kernel(const MergeTwoParams<T> p) {
  const int64_t row = static_cast<int64_t>(block_index_x()) * kMergeStateWaves + wave_index();
  if (row >= static_cast<int64_t>(p.seq_len) * p.num_heads) return;
  const int64_t t = row / p.num_heads;
  const int64_t h = row % p.num_heads;
  if (p.mask != nullptr && !p.mask[t]) return;
  const int lane = lane_id();
  const float s_a = p.a.s[t * p.a.s_stride_seq + h * p.a.s_stride_head];
  const float s_b = p.b.s[t * p.b.s_stride_seq + h * p.b.s_stride_head];
  const float m = max_f32(s_a, s_b);
  float w_a = 0.f, w_b = 0.f, s_out = -__builtin_huge_valf();
  if (m != -__builtin_huge_valf()) {
    w_a = fast_exp2(s_a - m);
    w_b = fast_exp2(s_b - m);
    const float sum = w_a + w_b;
    s_out = m + __builtin_log2f(sum);
    w_a /= sum;
    w_b /= sum;
  }
  const T* va = p.a.v + t * p.a.v_stride_seq + h * p.a.v_stride_head;
  const T* vb = p.b.v + t * p.b.v_stride_seq + h * p.b.v_stride_head;
  T* vo = p.out.v + t * p.out.v_stride_seq + h * p.out.v_stride_head;
  for (int d = lane; d < p.head_dim; d += kWaveSize) {
    const float x = w_a * value_to_float(va[d]) + w_b * value_to_float(vb[d]);
    vo[d] = value_from_float<T>(x);
  }
  wave_sync();  // every lane has read s before it is overwritten in place
  if (lane == 0) p.out.s[t * p.out.s_stride_seq + h * p.out.s_stride_head] = s_out;
}

// num_states states v [seq, num_states, heads, dim], s [seq, num_states, heads] (element
// strides) into contiguous out_v [seq, heads, dim], out_s [seq, heads].
template <typename T>
struct MergeManyParams {
  const T* v;
  int64_t v_stride_seq, v_stride_state, v_stride_head;
  const float* s;
  int64_t s_stride_seq, s_stride_state, s_stride_head;
  T* out_v;
  float* out_s;
  int32_t seq_len, num_states, num_heads, head_dim;
};

template <typename T>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMergeStateThreads) merge_many_states_kernel(const MergeManyParams<T> p) {
  const int64_t row = static_cast<int64_t>(block_index_x()) * kMergeStateWaves + wave_index();
  if (row >= static_cast<int64_t>(p.seq_len) * p.num_heads) return;
  const int64_t t = row / p.num_heads;
  const int64_t h = row % p.num_heads;
  const int lane = lane_id();
  const float* s_row = p.s + t * p.s_stride_seq + h * p.s_stride_head;
  float m = -__builtin_huge_valf();
  for (int i = 0; i < p.num_states; ++i) m = max_f32(m, s_row[i * p.s_stride_state]);
  float sum = 0.f;
  if (m != -__builtin_huge_valf()) {
    for (int i = 0; i < p.num_states; ++i) sum += fast_exp2(s_row[i * p.s_stride_state] - m);
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  const T* v_row = p.v + t * p.v_stride_seq + h * p.v_stride_head;
  T* out = p.out_v + row * p.head_dim;
  for (int d = lane; d < p.head_dim; d += kWaveSize) {
    float x = 0.f;
    if (sum > 0.f) {
      for (int i = 0; i < p.num_states; ++i) {
        x += fast_exp2(s_row[i * p.s_stride_state] - m) * value_to_float(v_row[i * p.v_stride_state + d]);
      }
    }
    out[d] = value_from_float<T>(x * inv);
  }
  if (lane == 0) p.out_s[row] = sum > 0.f ? m + __builtin_log2f(sum) : -__builtin_huge_valf();
}

// The instantiations: the three element types of v.
template TFO_GLOBAL void merge_two_states_kernel<half_t>(const MergeTwoParams<half_t>);
template TFO_GLOBAL void merge_two_states_kernel<bf16_t>(const MergeTwoParams<bf16_t>);
template TFO_GLOBAL void merge_two_states_kernel<float>(const MergeTwoParams<float>);
template TFO_GLOBAL void merge_many_states_kernel<half_t>(const MergeManyParams<half_t>);
template TFO_GLOBAL void merge_many_states_kernel<bf16_t>(const MergeManyParams<bf16_t>);
template TFO_GLOBAL void merge_many_states_kernel<float>(const MergeManyParams<float>);

}  // namespace tfo::kernels
