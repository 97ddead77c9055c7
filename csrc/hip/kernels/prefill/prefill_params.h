// Arguments of the prefill kernels, shared by the kernels and their torch bindings (torch-free).
#pragma once

#include <cstdint>

#include "../page/page_divisor.h"

namespace tfo::kernels::prefill {

struct PrefillParams {
  // q [qo_tokens, num_qo_heads, head_dim], o likewise; strides in elements.
  const void* q = nullptr;
  int q_stride_token = 0, q_stride_head = 0;
  void* o = nullptr;
  int o_stride_token = 0, o_stride_head = 0;
  float* lse = nullptr;  // [qo_tokens, num_qo_heads], base 2; may be null

  // K and V (which share their strides): row (token) pos of request r, kv head h starts at
  //   contiguous: base + (kv_indptr[r] + pos) * stride_token + h * stride_head
  //   paged:      base + page * stride_page + (pos % page_size) * stride_token + h * stride_head,
  //               page = kv_indices[kv_indptr[r] + pos / page_size]
  const void* k = nullptr;
  const void* v = nullptr;
  int kv_stride_page = 0, kv_stride_token = 0, kv_stride_head = 0;
  PageDivisor page_div;  // the page size (.size) and the division by it

  // Batch description (device arrays). Single-request launches leave these null and set
  // qo_len / kv_len instead.
  const int32_t* qo_indptr = nullptr;
  const int32_t* kv_indptr = nullptr;
  const int32_t* kv_indices = nullptr;
  const int32_t* kv_last_page_len = nullptr;
  const int32_t* plan = nullptr;  // plan_info (csrc/include/plan_info.h); null: single request
  int qo_len = 0, kv_len = 0;

  // Split-KV partial results: [rows, num_qo_heads, head_dim] and [rows, heads].
  float* partial_o = nullptr;
  float* partial_lse = nullptr;
  // Single-request launches split over kv (csrc/include/single_prefill_split.h): chunks of the
  // longest tile (1: no split), K/V tiles per chunk, and the chunks' rows of O / l in q's dtype,
  // [kv_splits x qo_len, num_qo_heads, head_dim] (their lse in partial_lse).
  int kv_splits = 1, kv_chunk_tiles = 0;
  void* split_o = nullptr;

  // Custom mask: bit (qi * kv_len + kj) of the bytes from mask_indptr[r] (0 when null), little
  // bit order. It replaces the causal mask.
  const uint8_t* custom_mask = nullptr;
  const int32_t* mask_indptr = nullptr;

  int num_qo_heads = 0, num_kv_heads = 0;
  // The GQA group (num_qo_heads / num_kv_heads, .size) and the division of a packed row by it
  // (page_divisor.h's multiply and shift: the row -> token mapping of the Q copy, the lse and
  // the output would otherwise be an integer division per row moved).
  PageDivisor group_div;
  bool causal = false;
  int window_left = -1;
  // Logits in base-2 units: without a soft cap, s * logit_scale (sm_scale * k_scale * log2 e);
  // with a cap c, cap_log2e * tanh(s * logit_scale) (logit_scale = sm_scale * k_scale / c,
  // cap_log2e = c * log2 e; 0 when off).
  float logit_scale = 1.0f;
  float cap_log2e = 0.0f;
  float o_scale = 1.0f;  // v_scale, applied to the output
};

}  // namespace tfo::kernels::prefill
