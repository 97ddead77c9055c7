// CPU dispatch of the attention operators: argument checks, then one AttentionProblem
// handed to run_attention with a schedule (the caller's plan_info for batch operators,
// a locally planned one for single-request operators).
#include <torch/library.h>

#include <vector>

#include "../include/plan_info.h"
#include "attention_cpu.h"

namespace flashinfer_ops {
namespace cpu {
namespace {

constexpr int64_t kLayoutNHD = 0, kLayoutHND = 1;
constexpr int64_t kQTileRows = 32;

void check_layout(int64_t kv_layout, const char* op) {
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
}

void check_q(const at::Tensor& q, const char* op) {
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16, op,
              ": q must be float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(q.stride(-1) == 1, op, ": q must be contiguous in its last dimension");
}

void check_kv_dtype(const at::Tensor& k, const at::Tensor& v, const char* op) {
  TORCH_CHECK(k.scalar_type() == v.scalar_type(), op, ": k and v must share a dtype, got ",
              k.scalar_type(), " and ", v.scalar_type());
  const auto t = k.scalar_type();
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat8_e4m3fn ||
                  t == at::kFloat8_e5m2 || t == at::kFloat8_e4m3fnuz || t == at::kFloat8_e5m2fnuz,
              op, ": k/v must be float16, bfloat16 or float8, got ", t);
  TORCH_CHECK(k.stride(-1) == 1 && v.stride(-1) == 1, op,
              ": k and v must be contiguous in their last dimension");
}

void check_int32(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous(), op, ": ", name, " must be contiguous 1-D");
}

void check_heads(int64_t num_qo_heads, int64_t num_kv_heads, const char* op) {
  TORCH_CHECK(num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0, op,
              ": num_qo_heads (", num_qo_heads, ") must be a multiple of num_kv_heads (",
              num_kv_heads, ")");
}

void set_outputs(AttentionProblem& p, at::Tensor& o, const std::optional<at::Tensor>& lse,
                 int64_t tokens, const char* op) {
  TORCH_CHECK(o.dim() == 3 && o.size(0) == tokens && o.size(1) == p.num_qo_heads &&
                  o.size(2) == p.head_dim && o.stride(-1) == 1,
              op, ": o must be [", tokens, ", ", p.num_qo_heads, ", ", p.head_dim,
              "] with a contiguous last dimension, got ", o.sizes());
  p.o = o.data_ptr();
  p.o_dtype = o.scalar_type();
  p.o_stride_token = o.stride(0);
  p.o_stride_head = o.stride(1);
  if (lse.has_value()) {
    TORCH_CHECK(lse->scalar_type() == at::kFloat && lse->is_contiguous() && lse->dim() == 2 &&
                    lse->size(0) == tokens && lse->size(1) == p.num_qo_heads,
                op, ": lse must be contiguous float32 [", tokens, ", ", p.num_qo_heads, "]");
    p.lse = lse->data_ptr<float>();
  }
}

void set_query(AttentionProblem& p, const at::Tensor& q) {
  p.q = q.data_ptr();
  p.q_dtype = q.scalar_type();
  p.q_stride_token = q.stride(0);
  p.q_stride_head = q.stride(1);
  p.num_qo_heads = q.size(1);
  p.head_dim = q.size(2);
}

// Contiguous-token K or V ([tokens, heads, dim] NHD or [heads, tokens, dim] HND).
KvAddressing ragged_addressing(const at::Tensor& t, int64_t kv_layout) {
  KvAddressing a;
  a.base = t.data_ptr();
  a.stride_token = t.stride(kv_layout == kLayoutNHD ? 0 : 1);
  a.stride_head = t.stride(kv_layout == kLayoutNHD ? 1 : 0);
  return a;
}

// Paged K or V ([pages, page_size, heads, dim] NHD or [pages, heads, page_size, dim] HND).
KvAddressing paged_addressing(const at::Tensor& t, int64_t kv_layout) {
  KvAddressing a;
  a.base = t.data_ptr();
  a.stride_page = t.stride(0);
  a.stride_token = t.stride(kv_layout == kLayoutNHD ? 1 : 2);
  a.stride_head = t.stride(kv_layout == kLayoutNHD ? 2 : 1);
  a.page_size = t.size(kv_layout == kLayoutNHD ? 1 : 2);
  return a;
}

void set_options(AttentionProblem& p, bool causal, int64_t window_left, double sm_scale,
                 double logits_soft_cap, double k_scale, double v_scale, const char* op) {
  TORCH_CHECK(window_left >= -1, op, ": window_left must be -1 (off) or >= 0, got ", window_left);
  TORCH_CHECK(logits_soft_cap >= 0.0, op, ": logits_soft_cap must be >= 0, got ",
              logits_soft_cap);
  p.causal = causal;
  p.window_left = static_cast<int>(window_left);
  p.sm_scale = static_cast<float>(sm_scale);
  p.logits_soft_cap = static_cast<float>(logits_soft_cap);
  p.k_scale = static_cast<float>(k_scale);
  p.v_scale = static_cast<float>(v_scale);
}

void set_custom_mask(AttentionProblem& p, const std::optional<at::Tensor>& packed_custom_mask,
                     const int32_t* mask_indptr, const char* op) {
  if (!packed_custom_mask.has_value()) return;
  TORCH_CHECK(packed_custom_mask->scalar_type() == at::kByte && packed_custom_mask->is_contiguous(),
              op, ": packed_custom_mask must be contiguous uint8");
  p.packed_custom_mask = packed_custom_mask->data_ptr<uint8_t>();
  p.mask_indptr = mask_indptr;
}

// Schedules a single request locally (the single-request operators take no plan).
void run_single(const AttentionProblem& p, int64_t qo_len, int64_t kv_len) {
  const int32_t qo_indptr[2] = {0, static_cast<int32_t>(qo_len)};
  const int32_t kv_lens[1] = {static_cast<int32_t>(kv_len)};
  std::vector<int32_t> plan(plan_size_for(qo_indptr, kv_lens, 1, kQTileRows, 0));
  plan_schedule(qo_indptr, kv_lens, 1, kQTileRows, 0, plan.data(), plan.size());
  run_attention(p, plan.data());
}

void check_single_kv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     int64_t kv_layout, const char* op) {
  check_layout(kv_layout, op);
  check_kv_dtype(k, v, op);
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3, op, ": k and v must be 3-D");
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v shapes differ: ", k.sizes(), " vs ",
              v.sizes());
  TORCH_CHECK(k.size(2) == q.size(-1), op, ": head_dim of q (", q.size(-1), ") and k (",
              k.size(2), ") differ");
  check_heads(q.size(-2), k.size(kv_layout == kLayoutNHD ? 1 : 0), op);
}

void single_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& o,
                    const std::optional<at::Tensor>& maybe_lse,
                    const std::optional<at::Tensor>& packed_custom_mask, int64_t kv_layout,
                    bool causal, int64_t window_left, double sm_scale, double logits_soft_cap,
                    double k_scale, double v_scale) {
  const char* op = "single_prefill";
  check_q(q, op);
  TORCH_CHECK(q.dim() == 3, op, ": q must be [qo_len, num_qo_heads, head_dim]");
  check_single_kv(q, k, v, kv_layout, op);
  AttentionProblem p;
  set_query(p, q);
  p.num_kv_heads = k.size(kv_layout == kLayoutNHD ? 1 : 0);
  p.kv_dtype = k.scalar_type();
  p.k = ragged_addressing(k, kv_layout);
  p.v = ragged_addressing(v, kv_layout);
  const int64_t qo_len = q.size(0), kv_len = k.size(kv_layout == kLayoutNHD ? 0 : 1);
  set_outputs(p, o, maybe_lse, qo_len, op);
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  const int32_t qo_indptr[2] = {0, static_cast<int32_t>(qo_len)};
  const int32_t kv_indptr[2] = {0, static_cast<int32_t>(kv_len)};
  const int32_t mask_indptr[1] = {0};
  if (packed_custom_mask.has_value()) {
    TORCH_CHECK(packed_custom_mask->numel() >= (qo_len * kv_len + 7) / 8, op,
                ": packed_custom_mask holds ", packed_custom_mask->numel(),
                " bytes, needs ceil(qo_len * kv_len / 8) = ", (qo_len * kv_len + 7) / 8);
  }
  set_custom_mask(p, packed_custom_mask, mask_indptr, op);
  p.qo_indptr = qo_indptr;
  p.kv_indptr = kv_indptr;
  run_single(p, qo_len, kv_len);
}

void single_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& o,
                   const std::optional<at::Tensor>& maybe_lse, int64_t kv_layout,
                   int64_t window_left, double sm_scale, double logits_soft_cap, double k_scale,
                   double v_scale, bool use_tensor_cores) {
  // use_tensor_cores selects a GPU kernel family; on the CPU both give the same result.
  (void)use_tensor_cores;
  const char* op = "single_decode";
  check_q(q, op);
  TORCH_CHECK(q.dim() == 2, op, ": q must be [num_qo_heads, head_dim]");
  check_single_kv(q, k, v, kv_layout, op);
  const at::Tensor q3 = q.unsqueeze(0);
  AttentionProblem p;
  set_query(p, q3);
  p.num_kv_heads = k.size(kv_layout == kLayoutNHD ? 1 : 0);
  p.kv_dtype = k.scalar_type();
  p.k = ragged_addressing(k, kv_layout);
  p.v = ragged_addressing(v, kv_layout);
  const int64_t kv_len = k.size(kv_layout == kLayoutNHD ? 0 : 1);
  TORCH_CHECK(o.dim() == 2 && o.sizes() == q.sizes(), op, ": o must have q's shape ", q.sizes());
  at::Tensor o3 = o.unsqueeze(0);
  std::optional<at::Tensor> lse2;
  if (maybe_lse.has_value()) {
    TORCH_CHECK(maybe_lse->numel() == q.size(0), op, ": lse must be [num_qo_heads]");
    lse2 = maybe_lse->view({1, q.size(0)});
  }
  set_outputs(p, o3, lse2, 1, op);
  set_options(p, false, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  const int32_t qo_indptr[2] = {0, 1};
  const int32_t kv_indptr[2] = {0, static_cast<int32_t>(kv_len)};
  p.qo_indptr = qo_indptr;
  p.kv_indptr = kv_indptr;
  run_single(p, 1, kv_len);
}

void check_plan(const at::Tensor& plan_info, const at::Tensor& partial_o,
                const at::Tensor& partial_lse, int64_t batch, const AttentionProblem& p,
                const char* op) {
  check_int32(plan_info, "plan_info", op);
  const int32_t* plan = plan_info.data_ptr<int32_t>();
  TORCH_CHECK(plan_info.numel() >= plan_info::kHeaderSize &&
                  plan[plan_info::kNumRequests] == batch &&
                  plan_info.numel() >= plan_info::size_for(plan[plan_info::kNumItems], batch),
              op, ": plan_info does not describe this batch of ", batch,
              " requests (call plan() with the same indptr arrays first)");
  const int64_t rows = plan[plan_info::kPartialRows];
  TORCH_CHECK(partial_o.scalar_type() == at::kFloat && partial_o.is_contiguous() &&
                  partial_lse.scalar_type() == at::kFloat && partial_lse.is_contiguous(),
              op, ": partial_o and partial_lse must be contiguous float32");
  TORCH_CHECK(partial_o.numel() >= rows * p.num_qo_heads * p.head_dim &&
                  partial_lse.numel() >= rows * p.num_qo_heads,
              op, ": partial buffers too small for the plan's ", rows, " partial rows");
}

void check_indptr(const at::Tensor& indptr, int64_t batch, int64_t last_bound, const char* name,
                  const char* op) {
  check_int32(indptr, name, op);
  TORCH_CHECK(indptr.numel() == batch + 1, op, ": ", name, " must have batch_size + 1 = ",
              batch + 1, " entries, got ", indptr.numel());
  const int32_t* d = indptr.data_ptr<int32_t>();
  TORCH_CHECK(d[0] == 0, op, ": ", name, "[0] must be 0, got ", d[0]);
  for (int64_t i = 0; i < batch; ++i) {
    TORCH_CHECK(d[i + 1] >= d[i], op, ": ", name, " must be non-decreasing (index ", i + 1, ")");
  }
  TORCH_CHECK(d[batch] <= last_bound, op, ": ", name, "[-1] = ", d[batch],
              " exceeds the available ", last_bound);
}

struct PagedCache {
  KvAddressing k, v;
  int64_t num_kv_heads;
};

PagedCache check_paged(const at::Tensor& q, const at::Tensor& paged_k, const at::Tensor& paged_v,
                       const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                       const at::Tensor& kv_last_page_len, int64_t batch, int64_t kv_layout,
                       const char* op) {
  check_layout(kv_layout, op);
  check_kv_dtype(paged_k, paged_v, op);
  TORCH_CHECK(paged_k.dim() == 4 && paged_k.sizes() == paged_v.sizes(), op,
              ": paged k/v caches must be 4-D and of equal shape");
  const int64_t num_pages = paged_k.size(0);
  const int64_t page_size = paged_k.size(kv_layout == kLayoutNHD ? 1 : 2);
  const int64_t num_kv_heads = paged_k.size(kv_layout == kLayoutNHD ? 2 : 1);
  TORCH_CHECK(paged_k.size(3) == q.size(-1), op, ": head_dim of q (", q.size(-1),
              ") and the kv cache (", paged_k.size(3), ") differ");
  check_heads(q.size(-2), num_kv_heads, op);
  check_int32(kv_indices, "kv_indices", op);
  check_indptr(kv_indptr, batch, kv_indices.numel(), "kv_indptr", op);
  check_int32(kv_last_page_len, "kv_last_page_len", op);
  TORCH_CHECK(kv_last_page_len.numel() == batch, op, ": kv_last_page_len must have batch_size = ",
              batch, " entries, got ", kv_last_page_len.numel());
  const int32_t* indptr = kv_indptr.data_ptr<int32_t>();
  const int32_t* last = kv_last_page_len.data_ptr<int32_t>();
  const int32_t* pages = kv_indices.data_ptr<int32_t>();
  for (int64_t r = 0; r < batch; ++r) {
    if (indptr[r + 1] > indptr[r]) {
      TORCH_CHECK(last[r] >= 1 && last[r] <= page_size, op, ": kv_last_page_len[", r, "] = ",
                  last[r], " must be in [1, page_size = ", page_size, "]");
    }
  }
  for (int64_t i = 0; i < indptr[batch]; ++i) {
    TORCH_CHECK(pages[i] >= 0 && pages[i] < num_pages, op, ": kv_indices[", i, "] = ", pages[i],
                " is outside the cache's ", num_pages, " pages");
  }
  return {paged_addressing(paged_k, kv_layout), paged_addressing(paged_v, kv_layout),
          num_kv_heads};
}

void batch_prefill_paged_run(const at::Tensor& q, const at::Tensor& paged_k,
                             const at::Tensor& paged_v, const at::Tensor& qo_indptr,
                             const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                             const at::Tensor& kv_last_page_len, const at::Tensor& plan_info,
                             at::Tensor& partial_o, at::Tensor& partial_lse, at::Tensor& o,
                             const std::optional<at::Tensor>& maybe_lse,
                             const std::optional<at::Tensor>& packed_custom_mask,
                             const std::optional<at::Tensor>& mask_indptr, int64_t kv_layout,
                             bool causal, int64_t window_left, double sm_scale,
                             double logits_soft_cap, double k_scale, double v_scale, bool enable_pdl) {
  const char* op = "batch_prefill_paged_run";
  TORCH_CHECK(!enable_pdl, op, ": enable_pdl needs programmatic dependent launch (NVIDIA sm_90 or newer)");
  check_q(q, op);
  TORCH_CHECK(q.dim() == 3, op, ": q must be [qo_tokens, num_qo_heads, head_dim]");
  const int64_t batch = kv_last_page_len.numel();
  check_indptr(qo_indptr, batch, q.size(0), "qo_indptr", op);
  TORCH_CHECK(qo_indptr.data_ptr<int32_t>()[batch] == q.size(0), op, ": qo_indptr[-1] (",
              qo_indptr.data_ptr<int32_t>()[batch], ") must equal q.shape[0] (", q.size(0), ")");
  const PagedCache cache = check_paged(q, paged_k, paged_v, kv_indptr, kv_indices,
                                       kv_last_page_len, batch, kv_layout, op);
  AttentionProblem p;
  set_query(p, q);
  p.num_kv_heads = cache.num_kv_heads;
  p.kv_dtype = paged_k.scalar_type();
  p.k = cache.k;
  p.v = cache.v;
  set_outputs(p, o, maybe_lse, q.size(0), op);
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  check_plan(plan_info, partial_o, partial_lse, batch, p, op);
  if (packed_custom_mask.has_value()) {
    TORCH_CHECK(mask_indptr.has_value(), op, ": packed_custom_mask needs mask_indptr");
    check_int32(*mask_indptr, "mask_indptr", op);
    TORCH_CHECK(mask_indptr->numel() >= batch, op, ": mask_indptr must have batch_size entries");
  }
  set_custom_mask(p, packed_custom_mask,
                  mask_indptr.has_value() ? mask_indptr->data_ptr<int32_t>() : nullptr, op);
  p.qo_indptr = qo_indptr.data_ptr<int32_t>();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.kv_indices = kv_indices.data_ptr<int32_t>();
  p.kv_last_page_len = kv_last_page_len.data_ptr<int32_t>();
  p.partial_o = partial_o.data_ptr<float>();
  p.partial_lse = partial_lse.data_ptr<float>();
  run_attention(p, plan_info.data_ptr<int32_t>());
}

void batch_prefill_ragged_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& qo_indptr, const at::Tensor& kv_indptr,
                              const at::Tensor& plan_info, at::Tensor& partial_o,
                              at::Tensor& partial_lse, at::Tensor& o,
                              const std::optional<at::Tensor>& maybe_lse,
                              const std::optional<at::Tensor>& packed_custom_mask,
                              const std::optional<at::Tensor>& mask_indptr, int64_t kv_layout,
                              bool causal, int64_t window_left, double sm_scale,
                              double logits_soft_cap, double k_scale, double v_scale, bool enable_pdl) {
  const char* op = "batch_prefill_ragged_run";
  TORCH_CHECK(!enable_pdl, op, ": enable_pdl needs programmatic dependent launch (NVIDIA sm_90 or newer)");
  check_q(q, op);
  TORCH_CHECK(q.dim() == 3, op, ": q must be [qo_tokens, num_qo_heads, head_dim]");
  check_single_kv(q, k, v, kv_layout, op);
  const int64_t batch = qo_indptr.numel() - 1;
  TORCH_CHECK(batch >= 0, op, ": qo_indptr must not be empty");
  check_indptr(qo_indptr, batch, q.size(0), "qo_indptr", op);
  TORCH_CHECK(qo_indptr.data_ptr<int32_t>()[batch] == q.size(0), op, ": qo_indptr[-1] (",
              qo_indptr.data_ptr<int32_t>()[batch], ") must equal q.shape[0] (", q.size(0), ")");
  const int64_t kv_tokens = k.size(kv_layout == kLayoutNHD ? 0 : 1);
  check_indptr(kv_indptr, batch, kv_tokens, "kv_indptr", op);
  AttentionProblem p;
  set_query(p, q);
  p.num_kv_heads = k.size(kv_layout == kLayoutNHD ? 1 : 0);
  p.kv_dtype = k.scalar_type();
  p.k = ragged_addressing(k, kv_layout);
  p.v = ragged_addressing(v, kv_layout);
  set_outputs(p, o, maybe_lse, q.size(0), op);
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  check_plan(plan_info, partial_o, partial_lse, batch, p, op);
  if (packed_custom_mask.has_value()) {
    TORCH_CHECK(mask_indptr.has_value(), op, ": packed_custom_mask needs mask_indptr");
    check_int32(*mask_indptr, "mask_indptr", op);
    TORCH_CHECK(mask_indptr->numel() >= batch, op, ": mask_indptr must have batch_size entries");
  }
  set_custom_mask(p, packed_custom_mask,
                  mask_indptr.has_value() ? mask_indptr->data_ptr<int32_t>() : nullptr, op);
  p.qo_indptr = qo_indptr.data_ptr<int32_t>();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.partial_o = partial_o.data_ptr<float>();
  p.partial_lse = partial_lse.data_ptr<float>();
  run_attention(p, plan_info.data_ptr<int32_t>());
}

void batch_decode_paged_run(const at::Tensor& q, const at::Tensor& paged_k,
                            const at::Tensor& paged_v, const at::Tensor& kv_indptr,
                            const at::Tensor& kv_indices, const at::Tensor& kv_last_page_len,
                            const at::Tensor& plan_info, at::Tensor& partial_o,
                            at::Tensor& partial_lse, at::Tensor& split_counters, at::Tensor& o,
                            const std::optional<at::Tensor>& maybe_lse, int64_t kv_layout,
                            int64_t window_left, double sm_scale, double logits_soft_cap,
                            double k_scale, double v_scale, bool use_tensor_cores, int64_t task_blocks,
                            bool enable_pdl) {
  (void)use_tensor_cores;  // selects a GPU kernel family; identical results on the CPU
  (void)task_blocks;       // the GPU launch's size
  const char* op = "batch_decode_paged_run";
  TORCH_CHECK(!enable_pdl, op, ": enable_pdl needs programmatic dependent launch (NVIDIA sm_90 or newer)");
  // The GPU kernels count split arrivals there and leave it zero; the CPU kernel merges the
  // splits itself and leaves it untouched.
  TORCH_CHECK(split_counters.scalar_type() == at::kInt && split_counters.dim() == 1 &&
                  split_counters.is_contiguous(),
              op, ": split_counters must be a contiguous 1-D int32 tensor");
  check_q(q, op);
  TORCH_CHECK(q.dim() == 3, op, ": q must be [batch_size, num_qo_heads, head_dim]");
  const int64_t batch = q.size(0);
  TORCH_CHECK(kv_last_page_len.numel() == batch, op, ": kv_last_page_len has ",
              kv_last_page_len.numel(), " entries but q holds ", batch, " requests");
  const PagedCache cache = check_paged(q, paged_k, paged_v, kv_indptr, kv_indices,
                                       kv_last_page_len, batch, kv_layout, op);
  AttentionProblem p;
  set_query(p, q);
  p.num_kv_heads = cache.num_kv_heads;
  p.kv_dtype = paged_k.scalar_type();
  p.k = cache.k;
  p.v = cache.v;
  set_outputs(p, o, maybe_lse, batch, op);
  set_options(p, false, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  check_plan(plan_info, partial_o, partial_lse, batch, p, op);
  std::vector<int32_t> qo_indptr(batch + 1);
  for (int64_t r = 0; r <= batch; ++r) qo_indptr[r] = static_cast<int32_t>(r);
  p.qo_indptr = qo_indptr.data();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.kv_indices = kv_indices.data_ptr<int32_t>();
  p.kv_last_page_len = kv_last_page_len.data_ptr<int32_t>();
  p.partial_o = partial_o.data_ptr<float>();
  p.partial_lse = partial_lse.data_ptr<float>();
  run_attention(p, plan_info.data_ptr<int32_t>());
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CPU, m) {
  m.impl("single_prefill", &single_prefill);
  m.impl("single_decode", &single_decode);
  m.impl("batch_prefill_paged_run", &batch_prefill_paged_run);
  m.impl("batch_prefill_ragged_run", &batch_prefill_ragged_run);
  m.impl("batch_decode_paged_run", &batch_decode_paged_run);
}

}  // namespace cpu
}  // namespace flashinfer_ops
