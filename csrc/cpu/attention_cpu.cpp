// Blockwise attention on the CPU. One task = one work item of the plan x one kv head:
// the query rows of the item for every query head of that kv head's group (GQA rows are
// processed together so each K/V row is converted to fp32 once), streamed over the
// item's kv range in blocks with an online softmax in base 2. Memory per task is
// O(rows x (head_dim + block)), never O(qo_len x kv_len).
#include "attention_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e4m3fnuz.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Float8_e5m2fnuz.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "../include/plan_info.h"

namespace flashinfer_ops {
namespace cpu {
namespace {

constexpr int64_t kKvBlock = 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename T>
inline void load_row(const T* src, float scale, int64_t n, float* dst) {
  for (int64_t d = 0; d < n; ++d) dst[d] = static_cast<float>(src[d]) * scale;
}

inline void load_row_dynamic(const void* src, at::ScalarType dtype, float scale, int64_t n,
                             float* dst) {
  switch (dtype) {
    case at::kHalf: return load_row(static_cast<const at::Half*>(src), scale, n, dst);
    case at::kBFloat16: return load_row(static_cast<const at::BFloat16*>(src), scale, n, dst);
    case at::kFloat: return load_row(static_cast<const float*>(src), scale, n, dst);
    default: TORCH_CHECK(false, "unsupported query dtype ", dtype);
  }
}

inline void store_row_dynamic(const float* src, float scale, int64_t n, at::ScalarType dtype,
                              void* dst) {
  switch (dtype) {
    case at::kHalf: {
      auto* out = static_cast<at::Half*>(dst);
      for (int64_t d = 0; d < n; ++d) out[d] = static_cast<at::Half>(src[d] * scale);
      return;
    }
    case at::kBFloat16: {
      auto* out = static_cast<at::BFloat16*>(dst);
      for (int64_t d = 0; d < n; ++d) out[d] = static_cast<at::BFloat16>(src[d] * scale);
      return;
    }
    case at::kFloat: {
      auto* out = static_cast<float*>(dst);
      for (int64_t d = 0; d < n; ++d) out[d] = src[d] * scale;
      return;
    }
    default: TORCH_CHECK(false, "unsupported output dtype ", dtype);
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int64_t d = 0;
  for (; d + 4 <= n; d += 4) {
    s0 += a[d] * b[d];
    s1 += a[d + 1] * b[d + 1];
    s2 += a[d + 2] * b[d + 2];
    s3 += a[d + 3] * b[d + 3];
  }
  for (; d < n; ++d) s0 += a[d] * b[d];
  return (s0 + s1) + (s2 + s3);
}

// Token offset of kv position `pos` of a request, for one head.
struct KvLocator {
  const KvAddressing& addr;
  const int32_t* pages;  // the request's page ids (paged), nullptr otherwise
  int64_t token_base;    // ragged: first token of the request

  int64_t offset(int64_t pos, int64_t head) const {
    if (addr.page_size > 0) {
      const int64_t page = pages[pos / addr.page_size];
      return page * addr.stride_page + (pos % addr.page_size) * addr.stride_token +
             head * addr.stride_head;
    }
    return (token_base + pos) * addr.stride_token + head * addr.stride_head;
  }
};

int64_t request_kv_len(const AttentionProblem& p, int64_t r) {
  const int64_t span = p.kv_indptr[r + 1] - p.kv_indptr[r];
  if (p.k.page_size == 0) return span;
  if (span == 0) return 0;
  return (span - 1) * p.k.page_size + p.kv_last_page_len[r];
}

struct Scratch {
  std::vector<float> q, s, k, v, acc, m, l;
};

template <typename KV>
void run_item(const AttentionProblem& p, const int32_t* item, int64_t kv_head, Scratch& w) {
  using namespace plan_info;
  const int64_t r = item[kRequest];
  const int64_t q_begin = item[kQBegin], q_end = item[kQEnd];
  const int64_t rows = q_end - q_begin;
  const int64_t group = p.num_qo_heads / p.num_kv_heads;
  const int64_t m_rows = rows * group;  // row index = row * group + head-in-group
  const int64_t D = p.head_dim;
  const int64_t qo_base = p.qo_indptr[r];
  const int64_t qo_len = p.qo_indptr[r + 1] - qo_base;
  const int64_t kv_len = request_kv_len(p, r);
  const int64_t delta = kv_len - qo_len;  // causal alignment: query i sits at kv position i + delta

  // Clip the kv range to what any row of the tile can see.
  int64_t kv_lo = item[kKvBegin], kv_hi = std::min<int64_t>(item[kKvEnd], kv_len);
  const bool masked_by_custom = p.packed_custom_mask != nullptr;
  if (p.causal && !masked_by_custom) kv_hi = std::min(kv_hi, q_end - 1 + delta + 1);
  if (p.window_left >= 0) kv_lo = std::max(kv_lo, q_begin + delta - p.window_left);

  const bool soft_cap = p.logits_soft_cap > 0.f;
  const float q_scale = soft_cap ? p.sm_scale / p.logits_soft_cap : p.sm_scale * kLog2e;

  w.q.resize(m_rows * D);
  w.acc.assign(m_rows * D, 0.f);
  w.m.assign(m_rows, kNegInf);
  w.l.assign(m_rows, 0.f);
  w.s.resize(m_rows * kKvBlock);
  w.k.resize(kKvBlock * D);
  w.v.resize(kKvBlock * D);
  const size_t q_elem = c10::elementSize(p.q_dtype);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = kv_head * group + g;
      const char* src = static_cast<const char*>(p.q) +
                        ((qo_base + q_begin + i) * p.q_stride_token + h * p.q_stride_head) * q_elem;
      load_row_dynamic(src, p.q_dtype, q_scale, D, &w.q[(i * group + g) * D]);
    }
  }

  const int32_t* pages = p.k.page_size > 0 ? p.kv_indices + p.kv_indptr[r] : nullptr;
  const int64_t token_base = p.k.page_size > 0 ? 0 : p.kv_indptr[r];
  const KvLocator k_loc{p.k, pages, token_base}, v_loc{p.v, pages, token_base};
  const auto* k_base = static_cast<const KV*>(p.k.base);
  const auto* v_base = static_cast<const KV*>(p.v.base);
  const uint8_t* mask = masked_by_custom ? p.packed_custom_mask + p.mask_indptr[r] : nullptr;

  for (int64_t j0 = kv_lo; j0 < kv_hi; j0 += kKvBlock) {
    const int64_t nb = std::min(kKvBlock, kv_hi - j0);
    for (int64_t j = 0; j < nb; ++j) {
      load_row(k_base + k_loc.offset(j0 + j, kv_head), p.k_scale, D, &w.k[j * D]);
    }
    // Scores (already in base-2 units), masked to -inf.
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t qi = q_begin + i;
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t kj = j0 + j;
        bool visible = true;
        if (mask != nullptr) {
          const int64_t bit = qi * kv_len + kj;
          visible = (mask[bit >> 3] >> (bit & 7)) & 1;
        } else if (p.causal) {
          visible = kj <= qi + delta;
        }
        if (p.window_left >= 0 && kj < qi + delta - p.window_left) visible = false;
        for (int64_t g = 0; g < group; ++g) {
          const int64_t row = i * group + g;
          float s = kNegInf;
          if (visible) {
            s = dot(&w.q[row * D], &w.k[j * D], D);
            if (soft_cap) s = p.logits_soft_cap * kLog2e * std::tanh(s);
          }
          w.s[row * kKvBlock + j] = s;
        }
      }
    }
    for (int64_t j = 0; j < nb; ++j) {
      load_row(v_base + v_loc.offset(j0 + j, kv_head), p.v_scale, D, &w.v[j * D]);
    }
    // Online softmax update and P.V accumulation.
    for (int64_t row = 0; row < m_rows; ++row) {
      float* s = &w.s[row * kKvBlock];
      float block_max = kNegInf;
      for (int64_t j = 0; j < nb; ++j) block_max = std::max(block_max, s[j]);
      if (block_max == kNegInf) continue;  // nothing visible in this block
      const float m_new = std::max(w.m[row], block_max);
      const float rescale = std::exp2(w.m[row] - m_new);  // exp2(-inf) = 0 on the first block
      float* acc = &w.acc[row * D];
      if (rescale != 1.f) {
        for (int64_t d = 0; d < D; ++d) acc[d] *= rescale;
      }
      float sum = 0.f;
      for (int64_t j = 0; j < nb; ++j) {
        const float pj = std::exp2(s[j] - m_new);
        sum += pj;
        if (pj == 0.f) continue;
        const float* vj = &w.v[j * D];
        for (int64_t d = 0; d < D; ++d) acc[d] += pj * vj[d];
      }
      w.l[row] = w.l[row] * rescale + sum;
      w.m[row] = m_new;
    }
  }

  // Epilogue: normalised output and base-2 lse, to the output or to the partial buffers.
  const int64_t partial_row = item[kPartialRow];
  const size_t o_elem = c10::elementSize(p.o_dtype);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t g = 0; g < group; ++g) {
      const int64_t row = i * group + g;
      const int64_t h = kv_head * group + g;
      const float l = w.l[row];
      const float inv_l = l > 0.f ? 1.f / l : 0.f;
      const float lse = l > 0.f ? w.m[row] + std::log2(l) : kNegInf;
      if (partial_row >= 0) {
        const int64_t pr = partial_row + i;
        float* dst = p.partial_o + (pr * p.num_qo_heads + h) * D;
        for (int64_t d = 0; d < D; ++d) dst[d] = w.acc[row * D + d] * inv_l;
        p.partial_lse[pr * p.num_qo_heads + h] = lse;
      } else {
        const int64_t token = qo_base + q_begin + i;
        char* dst = static_cast<char*>(p.o) +
                    (token * p.o_stride_token + h * p.o_stride_head) * o_elem;
        store_row_dynamic(&w.acc[row * D], inv_l, D, p.o_dtype, dst);
        if (p.lse != nullptr) p.lse[token * p.num_qo_heads + h] = lse;
      }
    }
  }
}

// Combines the num_splits partial results of every row of split requests.
void merge_partials(const AttentionProblem& p, const plan_info::View& plan) {
  using namespace plan_info;
  const int64_t batch = plan.num_requests();
  const int64_t D = p.head_dim, H = p.num_qo_heads;
  at::parallel_for(0, batch * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / H, h = task % H;
      const int32_t* req = plan.request(r);
      if (req[kPartialBase] < 0) continue;
      const int64_t qo_base = p.qo_indptr[r];
      const int64_t qo_len = p.qo_indptr[r + 1] - qo_base;
      for (int64_t i = 0; i < qo_len; ++i) {
        float m = kNegInf;
        for (int64_t s = 0; s < req[kNumSplits]; ++s) {
          const int64_t pr = req[kPartialBase] + s * qo_len + i;
          m = std::max(m, p.partial_lse[pr * H + h]);
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        float sum = 0.f;
        if (m != kNegInf) {
          for (int64_t s = 0; s < req[kNumSplits]; ++s) {
            const int64_t pr = req[kPartialBase] + s * qo_len + i;
            const float wgt = std::exp2(p.partial_lse[pr * H + h] - m);
            if (wgt == 0.f) continue;
            sum += wgt;
            const float* src = p.partial_o + (pr * H + h) * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += wgt * src[d];
          }
        }
        const int64_t token = qo_base + i;
        char* dst = static_cast<char*>(p.o) +
                    (token * p.o_stride_token + h * p.o_stride_head) * c10::elementSize(p.o_dtype);
        store_row_dynamic(acc.data(), sum > 0.f ? 1.f / sum : 0.f, D, p.o_dtype, dst);
        if (p.lse != nullptr) p.lse[token * H + h] = sum > 0.f ? m + std::log2(sum) : kNegInf;
      }
    }
  });
}

template <typename KV>
void run_typed(const AttentionProblem& p, const int32_t* plan_data) {
  const plan_info::View plan{plan_data};
  const int64_t items = plan.num_items();
  at::parallel_for(0, items * p.num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t task = begin; task < end; ++task) {
      run_item<KV>(p, plan.item(task / p.num_kv_heads), task % p.num_kv_heads, scratch);
    }
  });
  if (plan.data[plan_info::kPartialRows] > 0) merge_partials(p, plan);
}

}  // namespace

void run_attention(const AttentionProblem& p, const int32_t* plan_data) {
  switch (p.kv_dtype) {
    case at::kHalf: return run_typed<at::Half>(p, plan_data);
    case at::kBFloat16: return run_typed<at::BFloat16>(p, plan_data);
    case at::kFloat8_e4m3fn: return run_typed<c10::Float8_e4m3fn>(p, plan_data);
    case at::kFloat8_e5m2: return run_typed<c10::Float8_e5m2>(p, plan_data);
    case at::kFloat8_e4m3fnuz: return run_typed<c10::Float8_e4m3fnuz>(p, plan_data);
    case at::kFloat8_e5m2fnuz: return run_typed<c10::Float8_e5m2fnuz>(p, plan_data);
    default: TORCH_CHECK(false, "unsupported kv dtype ", p.kv_dtype);
  }
}

}  // namespace cpu
}  // namespace flashinfer_ops
