// Merging attention states (v, s) on the CPU: s is the base-2 log-sum-exp of the
// scaled logits that produced v, so merging two states over disjoint kv sets is
//   s = log2(2^s_a + 2^s_b),  v = (2^s_a v_a + 2^s_b v_b) / 2^s.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

namespace flashinfer_ops {
namespace cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_state(const at::Tensor& v, const at::Tensor& s, const char* v_name, const char* s_name,
                 const char* op) {
  TORCH_CHECK(v.dim() == 3, op, ": ", v_name, " must be [seq_len, num_heads, head_dim], got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16 ||
                  v.scalar_type() == at::kFloat,
              op, ": ", v_name, " must be float16, bfloat16 or float32, got ", v.scalar_type());
  TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": ", s_name, " must be float32, got ",
              s.scalar_type());
  TORCH_CHECK(s.dim() == 2 && s.size(0) == v.size(0) && s.size(1) == v.size(1), op, ": ",
              s_name, " must be [seq_len, num_heads] = [", v.size(0), ", ", v.size(1), "], got ",
              s.sizes());
}

// Works in float32 on contiguous copies; states are small compared with attention.
std::tuple<at::Tensor, at::Tensor> merge_states_impl(const at::Tensor& v, const at::Tensor& s) {
  // v: [seq, num_states, heads, dim] float32 contiguous; s: [seq, num_states, heads].
  const int64_t seq = v.size(0), n = v.size(1), H = v.size(2), D = v.size(3);
  at::Tensor v_out = at::empty({seq, H, D}, v.options());
  at::Tensor s_out = at::empty({seq, H}, s.options());
  const float* vp = v.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  float* vo = v_out.data_ptr<float>();
  float* so = s_out.data_ptr<float>();
  at::parallel_for(0, seq * H, 64, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / H, h = task % H;
      float m = kNegInf;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, sp[(t * n + i) * H + h]);
      float* dst = vo + task * D;
      std::fill(dst, dst + D, 0.f);
      if (m == kNegInf) {
        so[task] = kNegInf;
        continue;
      }
      float sum = 0.f;
      for (int64_t i = 0; i < n; ++i) {
        const float w = std::exp2(sp[(t * n + i) * H + h] - m);
        if (w == 0.f) continue;
        sum += w;
        const float* src = vp + ((t * n + i) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) dst[d] += w * src[d];
      }
      const float inv = 1.f / sum;
      for (int64_t d = 0; d < D; ++d) dst[d] *= inv;
      so[task] = m + std::log2(sum);
    }
  });
  return {v_out, s_out};
}

std::tuple<at::Tensor, at::Tensor> merge_state(const at::Tensor& v_a, const at::Tensor& s_a,
                                               const at::Tensor& v_b, const at::Tensor& s_b) {
  const char* op = "merge_state";
  check_state(v_a, s_a, "v_a", "s_a", op);
  check_state(v_b, s_b, "v_b", "s_b", op);
  TORCH_CHECK(v_a.sizes() == v_b.sizes() && v_a.scalar_type() == v_b.scalar_type(), op,
              ": v_a and v_b must have the same shape and dtype");
  const at::Tensor v = at::stack({v_a, v_b}, 1).to(at::kFloat).contiguous();
  const at::Tensor s = at::stack({s_a, s_b}, 1).contiguous();
  auto [v_out, s_out] = merge_states_impl(v, s);
  return {v_out.to(v_a.scalar_type()), s_out};
}

void merge_state_in_place(at::Tensor& v, at::Tensor& s, const at::Tensor& v_other,
                          const at::Tensor& s_other, const std::optional<at::Tensor>& mask) {
  const char* op = "merge_state_in_place";
  check_state(v, s, "v", "s", op);
  check_state(v_other, s_other, "v_other", "s_other", op);
  TORCH_CHECK(v.sizes() == v_other.sizes() && v.scalar_type() == v_other.scalar_type(), op,
              ": v and v_other must have the same shape and dtype");
  auto [v_out, s_out] = merge_states_impl(at::stack({v, v_other}, 1).to(at::kFloat).contiguous(),
                                          at::stack({s, s_other}, 1).contiguous());
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 1 && mask->numel() == v.size(0),
                op, ": mask must be a bool tensor of shape [seq_len] = [", v.size(0), "]");
    const at::Tensor keep = mask->logical_not();
    v_out = at::where(keep.view({-1, 1, 1}), v.to(at::kFloat), v_out);
    s_out = at::where(keep.view({-1, 1}), s, s_out);
  }
  v.copy_(v_out);
  s.copy_(s_out);
}

std::tuple<at::Tensor, at::Tensor> merge_states(const at::Tensor& v, const at::Tensor& s) {
  const char* op = "merge_states";
  TORCH_CHECK(v.dim() == 4, op, ": v must be [seq_len, num_states, num_heads, head_dim], got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16 ||
                  v.scalar_type() == at::kFloat,
              op, ": v must be float16, bfloat16 or float32, got ", v.scalar_type());
  TORCH_CHECK(s.scalar_type() == at::kFloat && s.dim() == 3 && s.size(0) == v.size(0) &&
                  s.size(1) == v.size(1) && s.size(2) == v.size(2),
              op, ": s must be float32 [seq_len, num_states, num_heads] matching v");
  auto [v_out, s_out] = merge_states_impl(v.to(at::kFloat).contiguous(), s.contiguous());
  return {v_out.to(v.scalar_type()), s_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CPU, m) {
  m.impl("merge_state", &merge_state);
  m.impl("merge_state_in_place", &merge_state_in_place);
  m.impl("merge_states", &merge_states);
}

}  // namespace cpu
}  // namespace flashinfer_ops
