// GPU bindings of the state-merging operators (base-2 lse): merge_state,
// merge_state_in_place, merge_states.
#include <torch/library.h>

#include "common.h"
#include "kernels/cascade/merge_state.cu"

namespace flashinfer_ops {
namespace gpu_binding {
namespace {

using namespace tfo::kernels;

void check_state(const at::Tensor& v, const at::Tensor& s, const char* v_name, const char* s_name,
                 const char* op) {
  check_cuda(v, v_name, op);
  check_cuda(s, s_name, op);
  TORCH_CHECK(v.dim() == 3, op, ": ", v_name, " must be [seq_len, num_heads, head_dim], got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16 ||
                  v.scalar_type() == at::kFloat,
              op, ": ", v_name, " must be float16, bfloat16 or float32, got ", v.scalar_type());
  TORCH_CHECK(v.stride(2) == 1, op, ": ", v_name, " must be contiguous in its last dimension");
  TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": ", s_name, " must be float32, got ",
              s.scalar_type());
  TORCH_CHECK(s.dim() == 2 && s.size(0) == v.size(0) && s.size(1) == v.size(1), op, ": ", s_name,
              " must be [seq_len, num_heads] = [", v.size(0), ", ", v.size(1), "], got ", s.sizes());
  TORCH_CHECK(s.device() == v.device(), op, ": ", v_name, " and ", s_name, " are on different devices");
}

template <typename T>
StateView<T> view_of(const at::Tensor& v, const at::Tensor& s) {
  return {static_cast<T*>(v.data_ptr()), v.stride(0), v.stride(1), s.data_ptr<float>(), s.stride(0),
          s.stride(1)};
}

template <typename F>
void with_value_type(at::ScalarType t, F&& f) {
  if (t == at::kHalf) return f(tfo::gpu::half_t{});
  if (t == at::kBFloat16) return f(tfo::gpu::bf16_t{});
  return f(float{});
}

int blocks_for(int64_t rows) { return static_cast<int>((rows + kMergeStateWaves - 1) / kMergeStateWaves); }

void merge_two(const at::Tensor& v_a, const at::Tensor& s_a, const at::Tensor& v_b,
               const at::Tensor& s_b, at::Tensor& v_out, at::Tensor& s_out, const bool* mask) {
  const int64_t rows = v_a.size(0) * v_a.size(1);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(v_a.device());
  with_value_type(v_a.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    MergeTwoParams<T> p{view_of<T>(v_a, s_a), view_of<T>(v_b, s_b), view_of<T>(v_out, s_out), mask,
                        static_cast<int32_t>(v_a.size(0)), static_cast<int32_t>(v_a.size(1)),
                        static_cast<int32_t>(v_a.size(2))};
    merge_two_states_kernel<T><<<blocks_for(rows), kMergeStateThreads, 0, current_stream()>>>(p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> merge_state(const at::Tensor& v_a, const at::Tensor& s_a,
                                               const at::Tensor& v_b, const at::Tensor& s_b) {
  const char* op = "merge_state";
  check_state(v_a, s_a, "v_a", "s_a", op);
  check_state(v_b, s_b, "v_b", "s_b", op);
  TORCH_CHECK(v_a.sizes() == v_b.sizes() && v_a.scalar_type() == v_b.scalar_type() &&
                  v_a.device() == v_b.device(),
              op, ": v_a and v_b must have the same shape, dtype and device");
  at::Tensor v_out = at::empty(v_a.sizes(), v_a.options());
  at::Tensor s_out = at::empty(s_a.sizes(), s_a.options());
  merge_two(v_a, s_a, v_b, s_b, v_out, s_out, nullptr);
  return {v_out, s_out};
}

void merge_state_in_place(at::Tensor& v, at::Tensor& s, const at::Tensor& v_other,
                          const at::Tensor& s_other, const std::optional<at::Tensor>& mask) {
  const char* op = "merge_state_in_place";
  check_state(v, s, "v", "s", op);
  check_state(v_other, s_other, "v_other", "s_other", op);
  TORCH_CHECK(v.sizes() == v_other.sizes() && v.scalar_type() == v_other.scalar_type() &&
                  v.device() == v_other.device(),
              op, ": v and v_other must have the same shape, dtype and device");
  const bool* mask_ptr = nullptr;
  if (mask.has_value()) {
    check_cuda(*mask, "mask", op);
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 1 && mask->numel() == v.size(0) &&
                    mask->is_contiguous(),
                op, ": mask must be a contiguous bool tensor of shape [seq_len] = [", v.size(0), "]");
    mask_ptr = mask->data_ptr<bool>();
  }
  merge_two(v, s, v_other, s_other, v, s, mask_ptr);
}

std::tuple<at::Tensor, at::Tensor> merge_states(const at::Tensor& v, const at::Tensor& s) {
  const char* op = "merge_states";
  check_cuda(v, "v", op);
  check_cuda(s, "s", op);
  TORCH_CHECK(v.dim() == 4, op, ": v must be [seq_len, num_states, num_heads, head_dim], got ",
              v.sizes());
  TORCH_CHECK(v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16 ||
                  v.scalar_type() == at::kFloat,
              op, ": v must be float16, bfloat16 or float32, got ", v.scalar_type());
  TORCH_CHECK(v.stride(3) == 1, op, ": v must be contiguous in its last dimension");
  TORCH_CHECK(s.scalar_type() == at::kFloat && s.dim() == 3 && s.size(0) == v.size(0) &&
                  s.size(1) == v.size(1) && s.size(2) == v.size(2) && s.device() == v.device(),
              op, ": s must be float32 [seq_len, num_states, num_heads] matching v");
  at::Tensor v_out = at::empty({v.size(0), v.size(2), v.size(3)}, v.options());
  at::Tensor s_out = at::empty({v.size(0), v.size(2)}, s.options());
  const int64_t rows = v.size(0) * v.size(2);
  if (rows == 0) return {v_out, s_out};
  const c10::cuda::CUDAGuard guard(v.device());
  with_value_type(v.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    MergeManyParams<T> p{static_cast<const T*>(v.data_ptr()), v.stride(0), v.stride(1), v.stride(2),
                         s.data_ptr<float>(), s.stride(0), s.stride(1), s.stride(2),
                         static_cast<T*>(v_out.data_ptr()), s_out.data_ptr<float>(),
                         static_cast<int32_t>(v.size(0)), static_cast<int32_t>(v.size(1)),
                         static_cast<int32_t>(v.size(2)), static_cast<int32_t>(v.size(3))};
    merge_many_states_kernel<T><<<blocks_for(rows), kMergeStateThreads, 0, current_stream()>>>(p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {v_out, s_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CUDA, m) {
  m.impl("merge_state", &merge_state);
  m.impl("merge_state_in_place", &merge_state_in_place);
  m.impl("merge_states", &merge_states);
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
