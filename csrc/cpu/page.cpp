// Paged KV cache helpers on the CPU: the append scatter and the index helpers that
// serving code calls around it (FlashInfer's `page` module).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e4m3fnuz.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Float8_e5m2fnuz.h>
#include <torch/library.h>

namespace flashinfer_ops {
namespace cpu {
namespace {

void check_int32_1d(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kInt && t.dim() == 1 && t.is_contiguous(), op, ": ", name,
              " must be a contiguous 1-D int32 tensor, got ", t.scalar_type(), " ", t.sizes());
}

template <typename Src, typename Dst>
void scatter_rows(const at::Tensor& src, at::Tensor& cache, const std::vector<int64_t>& dst_offset,
                  int64_t stride_head_cache, float inv_scale) {
  const int64_t nnz = src.size(0), H = src.size(1), D = src.size(2);
  const Src* s = src.data_ptr<Src>();
  Dst* c = static_cast<Dst*>(cache.data_ptr());
  const int64_t ss_tok = src.stride(0), ss_head = src.stride(1);
  at::parallel_for(0, nnz, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        const Src* row = s + i * ss_tok + h * ss_head;
        Dst* out = c + dst_offset[i] + h * stride_head_cache;
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<Dst>(static_cast<float>(row[d]) * inv_scale);
      }
    }
  });
}

template <typename Src>
void scatter_dispatch(const at::Tensor& src, at::Tensor& cache,
                      const std::vector<int64_t>& offsets, int64_t stride_head, double scale) {
  const float inv = static_cast<float>(1.0 / scale);
  switch (cache.scalar_type()) {
    case at::kHalf: return scatter_rows<Src, at::Half>(src, cache, offsets, stride_head, inv);
    case at::kBFloat16: return scatter_rows<Src, at::BFloat16>(src, cache, offsets, stride_head, inv);
    case at::kFloat8_e4m3fn:
      return scatter_rows<Src, c10::Float8_e4m3fn>(src, cache, offsets, stride_head, inv);
    case at::kFloat8_e5m2:
      return scatter_rows<Src, c10::Float8_e5m2>(src, cache, offsets, stride_head, inv);
    case at::kFloat8_e4m3fnuz:
      return scatter_rows<Src, c10::Float8_e4m3fnuz>(src, cache, offsets, stride_head, inv);
    case at::kFloat8_e5m2fnuz:
      return scatter_rows<Src, c10::Float8_e5m2fnuz>(src, cache, offsets, stride_head, inv);
    default: TORCH_CHECK(false, "append_paged_kv_cache: unsupported cache dtype ", cache.scalar_type());
  }
}

void append_paged_kv_cache(const at::Tensor& append_key, const at::Tensor& append_value,
                           const at::Tensor& batch_indices, const at::Tensor& positions,
                           at::Tensor& paged_k_cache, at::Tensor& paged_v_cache,
                           const at::Tensor& kv_indices, const at::Tensor& kv_indptr,
                           const at::Tensor& kv_last_page_len, int64_t kv_layout, double k_scale,
                           double v_scale, bool enable_pdl) {
  const char* op = "append_paged_kv_cache";
  TORCH_CHECK(!enable_pdl, op, ": enable_pdl needs programmatic dependent launch (NVIDIA sm_90 or newer)");
  TORCH_CHECK(kv_layout == 0 || kv_layout == 1, op, ": kv_layout must be 0 (NHD) or 1 (HND)");
  TORCH_CHECK(append_key.dim() == 3 && append_key.sizes() == append_value.sizes(), op,
              ": append_key and append_value must be [nnz, num_kv_heads, head_dim] of equal shape");
  TORCH_CHECK(append_key.scalar_type() == append_value.scalar_type() &&
                  (append_key.scalar_type() == at::kHalf || append_key.scalar_type() == at::kBFloat16),
              op, ": append_key/append_value must both be float16 or bfloat16");
  TORCH_CHECK(append_key.stride(-1) == 1 && append_value.stride(-1) == 1, op,
              ": append_key/append_value must be contiguous in the last dimension");
  TORCH_CHECK(paged_k_cache.dim() == 4 && paged_k_cache.sizes() == paged_v_cache.sizes() &&
                  paged_k_cache.scalar_type() == paged_v_cache.scalar_type(),
              op, ": paged k/v caches must be 4-D, of equal shape and dtype");
  TORCH_CHECK(paged_k_cache.stride(-1) == 1 && paged_v_cache.stride(-1) == 1, op,
              ": paged caches must be contiguous in the last dimension");
  const auto cache_t = paged_k_cache.scalar_type();
  const bool fp8 = cache_t == at::kFloat8_e4m3fn || cache_t == at::kFloat8_e5m2 ||
                   cache_t == at::kFloat8_e4m3fnuz || cache_t == at::kFloat8_e5m2fnuz;
  TORCH_CHECK(fp8 || cache_t == append_key.scalar_type(), op, ": the cache dtype (", cache_t,
              ") does not match append_key's dtype (", append_key.scalar_type(), ")");
  TORCH_CHECK(k_scale > 0.0 && v_scale > 0.0, op, ": k_scale and v_scale must be positive");
  const int64_t page_size = paged_k_cache.size(kv_layout == 0 ? 1 : 2);
  const int64_t heads = paged_k_cache.size(kv_layout == 0 ? 2 : 1);
  TORCH_CHECK(append_key.size(1) == heads && append_key.size(2) == paged_k_cache.size(3), op,
              ": append_key is ", append_key.sizes(), " but the cache holds ", heads,
              " kv heads of dim ", paged_k_cache.size(3), " (kv_layout ",
              kv_layout == 0 ? "NHD" : "HND", ")");
  check_int32_1d(batch_indices, "batch_indices", op);
  check_int32_1d(positions, "positions", op);
  check_int32_1d(kv_indices, "kv_indices", op);
  check_int32_1d(kv_indptr, "kv_indptr", op);
  check_int32_1d(kv_last_page_len, "kv_last_page_len", op);
  const int64_t nnz = append_key.size(0);
  TORCH_CHECK(batch_indices.numel() == nnz && positions.numel() == nnz, op,
              ": batch_indices and positions must have nnz = ", nnz, " entries");
  const int64_t batch = kv_last_page_len.numel();
  TORCH_CHECK(kv_indptr.numel() == batch + 1, op, ": kv_indptr must have batch_size + 1 = ",
              batch + 1, " entries, got ", kv_indptr.numel());
  const int32_t* bi = batch_indices.data_ptr<int32_t>();
  const int32_t* pos = positions.data_ptr<int32_t>();
  const int32_t* pages = kv_indices.data_ptr<int32_t>();
  const int32_t* indptr = kv_indptr.data_ptr<int32_t>();
  const int32_t* last = kv_last_page_len.data_ptr<int32_t>();
  const int64_t num_pages = paged_k_cache.size(0);
  TORCH_CHECK(indptr[batch] <= kv_indices.numel(), op, ": kv_indptr[-1] = ", indptr[batch],
              " exceeds kv_indices' ", kv_indices.numel(), " entries");

  // Element offsets of each appended token in the K and V caches (head 0).
  std::vector<int64_t> k_off(nnz), v_off(nnz);
  const int64_t tok_dim = kv_layout == 0 ? 1 : 2;
  for (int64_t i = 0; i < nnz; ++i) {
    const int64_t b = bi[i];
    TORCH_CHECK(b >= 0 && b < batch, op, ": batch_indices[", i, "] = ", b,
                " is outside the batch of ", batch, " requests");
    const int64_t n_pages = indptr[b + 1] - indptr[b];
    const int64_t kv_len = n_pages == 0 ? 0 : (n_pages - 1) * page_size + last[b];
    TORCH_CHECK(pos[i] >= 0 && pos[i] < kv_len, op, ": positions[", i, "] = ", pos[i],
                " is beyond request ", b, "'s ", kv_len, " kv slots (kv_indptr/kv_last_page_len)");
    const int64_t page = pages[indptr[b] + pos[i] / page_size];
    TORCH_CHECK(page >= 0 && page < num_pages, op, ": kv_indices entry ", page,
                " is outside the cache's ", num_pages, " pages");
    const int64_t slot = pos[i] % page_size;
    k_off[i] = page * paged_k_cache.stride(0) + slot * paged_k_cache.stride(tok_dim);
    v_off[i] = page * paged_v_cache.stride(0) + slot * paged_v_cache.stride(tok_dim);
  }
  const int64_t head_dim_idx = kv_layout == 0 ? 2 : 1;
  if (append_key.scalar_type() == at::kHalf) {
    scatter_dispatch<at::Half>(append_key, paged_k_cache, k_off, paged_k_cache.stride(head_dim_idx), k_scale);
    scatter_dispatch<at::Half>(append_value, paged_v_cache, v_off, paged_v_cache.stride(head_dim_idx), v_scale);
  } else {
    scatter_dispatch<at::BFloat16>(append_key, paged_k_cache, k_off, paged_k_cache.stride(head_dim_idx), k_scale);
    scatter_dispatch<at::BFloat16>(append_value, paged_v_cache, v_off, paged_v_cache.stride(head_dim_idx), v_scale);
  }
}

std::tuple<at::Tensor, at::Tensor> get_batch_indices_positions(const at::Tensor& append_indptr,
                                                               const at::Tensor& seq_lens,
                                                               int64_t nnz) {
  const char* op = "get_batch_indices_positions";
  check_int32_1d(append_indptr, "append_indptr", op);
  check_int32_1d(seq_lens, "seq_lens", op);
  const int64_t batch = seq_lens.numel();
  TORCH_CHECK(append_indptr.numel() == batch + 1, op, ": append_indptr must have batch_size + 1 = ",
              batch + 1, " entries, got ", append_indptr.numel());
  TORCH_CHECK(nnz >= 0, op, ": nnz must be >= 0");
  at::Tensor batch_indices = at::empty({nnz}, append_indptr.options());
  at::Tensor positions = at::empty({nnz}, append_indptr.options());
  const int32_t* indptr = append_indptr.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  int32_t* bi = batch_indices.data_ptr<int32_t>();
  int32_t* pos = positions.data_ptr<int32_t>();
  TORCH_CHECK(indptr[batch] <= nnz, op, ": append_indptr[-1] = ", indptr[batch],
              " exceeds nnz = ", nnz);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = indptr[b + 1] - indptr[b];
    TORCH_CHECK(n >= 0 && n <= lens[b], op, ": request ", b, " appends ", n,
                " tokens but its seq_len is ", lens[b]);
    for (int64_t i = 0; i < n; ++i) {
      bi[indptr[b] + i] = static_cast<int32_t>(b);
      pos[indptr[b] + i] = static_cast<int32_t>(lens[b] - n + i);
    }
  }
  // Entries past append_indptr[-1] (padding up to nnz) are marked invalid.
  for (int64_t i = indptr[batch]; i < nnz; ++i) {
    bi[i] = -1;
    pos[i] = -1;
  }
  return {batch_indices, positions};
}

at::Tensor get_seq_lens(const at::Tensor& kv_indptr, const at::Tensor& kv_last_page_len,
                        int64_t page_size) {
  const char* op = "get_seq_lens";
  check_int32_1d(kv_indptr, "kv_indptr", op);
  check_int32_1d(kv_last_page_len, "kv_last_page_len", op);
  TORCH_CHECK(page_size > 0, op, ": page_size must be positive, got ", page_size);
  const int64_t batch = kv_last_page_len.numel();
  TORCH_CHECK(kv_indptr.numel() == batch + 1, op, ": kv_indptr must have batch_size + 1 = ",
              batch + 1, " entries, got ", kv_indptr.numel());
  at::Tensor out = at::empty({batch}, kv_indptr.options());
  const int32_t* indptr = kv_indptr.data_ptr<int32_t>();
  const int32_t* last = kv_last_page_len.data_ptr<int32_t>();
  int32_t* o = out.data_ptr<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pages = indptr[b + 1] - indptr[b];
    // FlashInfer's convention: a request without pages reports kv_last_page_len.
    o[b] = static_cast<int32_t>(std::max<int64_t>(pages - 1, 0) * page_size + last[b]);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CPU, m) {
  m.impl("append_paged_kv_cache", &append_paged_kv_cache);
  m.impl("get_batch_indices_positions", &get_batch_indices_positions);
  m.impl("get_seq_lens", &get_seq_lens);
}

}  // namespace cpu
}  // namespace flashinfer_ops
