// The operator registry: every torch.ops.flashinfer schema, in one place.
//
// Kernels register per dispatch key in the files that implement them
// (csrc/cpu/*.cpp for CPU, csrc/hip/bindings/*.cpp for CUDA/HIP); fakes live in
// meta_kernels/. Conventions shared by all schemas:
//   kv_layout      0 = NHD ([tokens, heads, dim]), 1 = HND ([heads, tokens, dim])
//   window_left    -1 = no sliding window
//   logits_soft_cap 0.0 = off; otherwise logits = cap * tanh(q.k * sm_scale / cap)
//   k_scale/v_scale dequantisation scales of an FP8 KV cache (1.0 otherwise)
//   lse            float32, base 2, [qo_tokens, num_qo_heads]
//   plan_info      int32 schedule written by plan_batch (layout: csrc/include/plan_info.h)
#include <torch/library.h>
#include <pybind11/pybind11.h>

TORCH_LIBRARY(flashinfer, m) {
  // Single request.
  m.def(
      "single_prefill(Tensor q, Tensor k, Tensor v, Tensor(a!) o, Tensor(b!)? maybe_lse, "
      "Tensor? packed_custom_mask, int kv_layout, bool causal, int window_left, float sm_scale, "
      "float logits_soft_cap, float k_scale, float v_scale) -> ()");
  m.def(
      "single_decode(Tensor q, Tensor k, Tensor v, Tensor(a!) o, Tensor(b!)? maybe_lse, "
      "int kv_layout, int window_left, float sm_scale, float logits_soft_cap, float k_scale, "
      "float v_scale, bool use_tensor_cores) -> ()");

  // Batched: a host planner writes the schedule, the run operators consume it.
  m.def(
      "plan_batch(Tensor qo_indptr, Tensor kv_lens, Tensor(a!) plan_info, int q_tile_rows, "
      "int kv_chunk_size) -> ()");
  m.def(
      "batch_prefill_paged_run(Tensor q, Tensor paged_k, Tensor paged_v, Tensor qo_indptr, "
      "Tensor kv_indptr, Tensor kv_indices, Tensor kv_last_page_len, Tensor plan_info, "
      "Tensor(a!) partial_o, Tensor(b!) partial_lse, Tensor(c!) o, Tensor(d!)? maybe_lse, "
      "Tensor? packed_custom_mask, Tensor? mask_indptr, int kv_layout, bool causal, "
      "int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, "
      "bool enable_pdl=False) -> ()");
  m.def(
      "batch_prefill_ragged_run(Tensor q, Tensor k, Tensor v, Tensor qo_indptr, Tensor kv_indptr, "
      "Tensor plan_info, Tensor(a!) partial_o, Tensor(b!) partial_lse, Tensor(c!) o, "
      "Tensor(d!)? maybe_lse, Tensor? packed_custom_mask, Tensor? mask_indptr, int kv_layout, "
      "bool causal, int window_left, float sm_scale, float logits_soft_cap, float k_scale, "
      "float v_scale, bool enable_pdl=False) -> ()");
  m.def(
      "batch_decode_paged_run(Tensor q, Tensor paged_k, Tensor paged_v, Tensor kv_indptr, "
      "Tensor kv_indices, Tensor kv_last_page_len, Tensor plan_info, Tensor(a!) partial_o, "
      "Tensor(b!) partial_lse, Tensor(c!) split_counters, Tensor(d!) o, Tensor(e!)? maybe_lse, "
      "int kv_layout, "
      "int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, "
      "bool use_tensor_cores, int task_blocks=0, bool enable_pdl=False) -> ()");

  // Cascade building blocks (base-2 lse).
  m.def("merge_state(Tensor v_a, Tensor s_a, Tensor v_b, Tensor s_b) -> (Tensor, Tensor)");
  m.def(
      "merge_state_in_place(Tensor(a!) v, Tensor(b!) s, Tensor v_other, Tensor s_other, "
      "Tensor? mask) -> ()");
  m.def("merge_states(Tensor v, Tensor s) -> (Tensor, Tensor)");

  // Paged KV cache.
  m.def(
      "append_paged_kv_cache(Tensor append_key, Tensor append_value, Tensor batch_indices, "
      "Tensor positions, Tensor(a!) paged_k_cache, Tensor(b!) paged_v_cache, Tensor kv_indices, "
      "Tensor kv_indptr, Tensor kv_last_page_len, int kv_layout, float k_scale, "
      "float v_scale, bool enable_pdl=False) -> ()");
  m.def(
      "get_batch_indices_positions(Tensor append_indptr, Tensor seq_lens, int nnz) -> "
      "(Tensor, Tensor)");
  m.def("get_seq_lens(Tensor kv_indptr, Tensor kv_last_page_len, int page_size) -> Tensor");
}

#include <string>

namespace flashinfer_ops {
bool gpu_kernels_built();
std::string gpu_instantiations();
bool timeline_built();
std::string kernel_variants_built();
namespace gpu_binding {
void set_decode_timeline(int64_t records, int64_t tasks);
int64_t decode_grid_blocks(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                           int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores);
int64_t decode_wide_tasks(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                          int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores);
int64_t decode_four_block_grid(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                               int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores);
int64_t prefill_grid_blocks(const std::string& dtype, int64_t head_dim, bool paged, bool transform_scores,
                            bool masked);
}
namespace cpu {
void bind_plan_host(pybind11::module_& m);
void bind_upload(pybind11::module_& m);
}
}

// The Python extension module: importing it loads the registry above.
PYBIND11_MODULE(_C, module) {
  module.doc() = "torch.ops.flashinfer operators (schemas, CPU and GPU kernels)";
  module.def("gpu_kernels_built", &flashinfer_ops::gpu_kernels_built,
             "True when this build contains the CUDA/HIP kernels");
  module.def("gpu_instantiations", &flashinfer_ops::gpu_instantiations,
             "'head_dims;dtypes' instantiated by this build's GPU kernels ('' without them)");
  module.def("decode_grid_blocks", &flashinfer_ops::gpu_binding::decode_grid_blocks,
             "blocks of the persistent batch-decode grid on the current GPU for (q_dtype, kv_dtype, "
             "head_dim, num_qo_heads, num_kv_heads, use_tensor_cores); 0 when not served");
  module.def("decode_wide_tasks", &flashinfer_ops::gpu_binding::decode_wide_tasks,
             "the most (item, kv head) tasks a batch-decode plan may have for the tensor-core kernel's wide "
             "shape on the current GPU, for the same arguments; 0 when that shape is never taken");
  module.def("decode_four_block_grid", &flashinfer_ops::gpu_binding::decode_four_block_grid,
             "blocks of the CUDA-core batch-decode grid at four blocks per multiprocessor (16-bit caches, GQA "
             "groups of 2-4) on the current GPU, which run() takes for a launch of more blocks than the default "
             "grid and at most these, for the same arguments; 0 where there is none");
  module.def("prefill_grid_blocks", &flashinfer_ops::gpu_binding::prefill_grid_blocks,
             "blocks of the persistent batch-prefill grid on the current GPU for (dtype, head_dim, paged, "
             "transform_scores, masked); 0 when not served");
  module.def("timeline_built", &flashinfer_ops::timeline_built,
             "True when the GPU kernels record launch timelines (TFO_TIMELINE=1, a profiling build)");
  module.def("kernel_variants_built", &flashinfer_ops::kernel_variants_built,
             "comma list of the kernel variants under evaluation this build's GPU kernels use "
             "(TFO_KERNEL_VARIANTS, an A/B build); '' for the default kernels");
  module.def("set_decode_timeline", &flashinfer_ops::gpu_binding::set_decode_timeline,
             "(records data_ptr, tasks): decode launches write per-task timeline records there "
             "(csrc/include/timeline_record.h); 0 turns it off. Profiling builds only");
  flashinfer_ops::cpu::bind_plan_host(module);
  flashinfer_ops::cpu::bind_upload(module);
}
