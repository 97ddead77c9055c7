// GPU bindings of the paged KV-cache operators: append_paged_kv_cache,
// get_batch_indices_positions, get_seq_lens. No device data is read on the host.
#include <torch/library.h>

#include "common.h"
#include "kernels/page/paged_kv.cu"

namespace flashinfer_ops {
namespace gpu_binding {
namespace {

using namespace tfo::kernels;

void check_int32_1d(const at::Tensor& t, const char* name, const char* op) {
  check_cuda(t, name, op);
  TORCH_CHECK(t.scalar_type() == at::kInt && t.dim() == 1 && t.is_contiguous(), op, ": ", name,
              " must be a contiguous 1-D int32 tensor, got ", t.scalar_type(), " ", t.sizes());
}

void check_rows(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.stride(-1) == 1, op, ": ", name, " must be contiguous in the last dimension");
  for (int64_t i = 0; i + 1 < t.dim(); ++i) {
    TORCH_CHECK(t.size(i) <= 1 || t.stride(i) % 8 == 0, op, ": ", name,
                " strides must be multiples of 8 elements, got ", t.strides());
  }
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % (8 * t.element_size()) == 0, op, ": ",
              name, " must be aligned to ", 8 * t.element_size(), " bytes");
}

template <typename Src, typename Dst>
void launch_append(AppendParams p, bool pdl) {
  if (p.nnz == 0 || p.num_heads == 0) return;
  const int chunks = p.head_dim / 8;
  p.heads_per_block = std::min<int>(p.num_heads, kPageThreads / chunks);
  // A block per token up to a few rounds of the GPU: long appends keep many tokens' index
  // lookups in flight instead of walking them one after another in few blocks.
  p.grid_tokens = static_cast<int32_t>(std::min<int64_t>(p.nnz, int64_t{num_multiprocessors()} * 64));
  const dim3 block(static_cast<unsigned>(chunks), static_cast<unsigned>(p.heads_per_block));
  launch_kernel(&append_paged_kv_kernel<Src, Dst>, dim3(static_cast<unsigned>(p.grid_tokens)), block, 0,
                current_stream(), pdl, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Src>
void dispatch_cache(at::ScalarType cache_t, const AppendParams& p, bool pdl) {
  switch (cache_t) {
    case at::kFloat8_e4m3fn: return launch_append<Src, Fp8Store<Fp8Format::kE4M3Fn>>(p, pdl);
    case at::kFloat8_e5m2: return launch_append<Src, Fp8Store<Fp8Format::kE5M2>>(p, pdl);
    case at::kFloat8_e4m3fnuz: return launch_append<Src, Fp8Store<Fp8Format::kE4M3Fnuz>>(p, pdl);
    case at::kFloat8_e5m2fnuz: return launch_append<Src, Fp8Store<Fp8Format::kE5M2Fnuz>>(p, pdl);
    default: return launch_append<Src, Src>(p, pdl);
  }
}

void append_paged_kv_cache(const at::Tensor& append_key, const at::Tensor& append_value,
                           const at::Tensor& batch_indices, const at::Tensor& positions,
                           at::Tensor& paged_k_cache, at::Tensor& paged_v_cache,
                           const at::Tensor& kv_indices, const at::Tensor& kv_indptr,
                           const at::Tensor& kv_last_page_len, int64_t kv_layout, double k_scale,
                           double v_scale, bool enable_pdl) {
  const char* op = "append_paged_kv_cache";
  TORCH_CHECK(kv_layout == 0 || kv_layout == 1, op, ": kv_layout must be 0 (NHD) or 1 (HND)");
  check_cuda(append_key, "append_key", op);
  check_cuda(append_value, "append_value", op);
  check_cuda(paged_k_cache, "paged_k_cache", op);
  check_cuda(paged_v_cache, "paged_v_cache", op);
  TORCH_CHECK(append_key.dim() == 3 && append_key.sizes() == append_value.sizes(), op,
              ": append_key and append_value must be [nnz, num_kv_heads, head_dim] of equal shape");
  TORCH_CHECK(append_key.scalar_type() == append_value.scalar_type() &&
                  (append_key.scalar_type() == at::kHalf || append_key.scalar_type() == at::kBFloat16),
              op, ": append_key/append_value must both be float16 or bfloat16");
  TORCH_CHECK(paged_k_cache.dim() == 4 && paged_k_cache.sizes() == paged_v_cache.sizes() &&
                  paged_k_cache.scalar_type() == paged_v_cache.scalar_type(),
              op, ": paged k/v caches must be 4-D, of equal shape and dtype");
  const auto cache_t = paged_k_cache.scalar_type();
  const bool fp8 = cache_t == at::kFloat8_e4m3fn || cache_t == at::kFloat8_e5m2 ||
                   cache_t == at::kFloat8_e4m3fnuz || cache_t == at::kFloat8_e5m2fnuz;
  TORCH_CHECK(fp8 || cache_t == append_key.scalar_type(), op, ": the cache dtype (", cache_t,
              ") does not match append_key's dtype (", append_key.scalar_type(), ")");
  TORCH_CHECK(k_scale > 0.0 && v_scale > 0.0, op, ": k_scale and v_scale must be positive");
  const int tok = kv_layout == 0 ? 1 : 2, head = kv_layout == 0 ? 2 : 1;
  TORCH_CHECK(append_key.size(1) == paged_k_cache.size(head) &&
                  append_key.size(2) == paged_k_cache.size(3),
              op, ": append_key is ", append_key.sizes(), " but the cache holds ",
              paged_k_cache.size(head), " kv heads of dim ", paged_k_cache.size(3));
  TORCH_CHECK(append_key.size(2) % 8 == 0 && append_key.size(2) <= 8 * kPageThreads, op,
              ": head_dim must be a multiple of 8, at most ", 8 * kPageThreads, ", on the GPU");
  TORCH_CHECK(append_key.size(0) < (int64_t{1} << 31), op, ": nnz must fit in int32");
  check_rows(append_key, "append_key", op);
  check_rows(append_value, "append_value", op);
  check_rows(paged_k_cache, "paged_k_cache", op);
  check_rows(paged_v_cache, "paged_v_cache", op);
  check_int32_1d(batch_indices, "batch_indices", op);
  check_int32_1d(positions, "positions", op);
  check_int32_1d(kv_indices, "kv_indices", op);
  check_int32_1d(kv_indptr, "kv_indptr", op);
  check_int32_1d(kv_last_page_len, "kv_last_page_len", op);
  const int64_t nnz = append_key.size(0);
  TORCH_CHECK(batch_indices.numel() == nnz && positions.numel() == nnz, op,
              ": batch_indices and positions must have nnz = ", nnz, " entries");
  TORCH_CHECK(kv_indptr.numel() == kv_last_page_len.numel() + 1, op,
              ": kv_indptr must have batch_size + 1 = ", kv_last_page_len.numel() + 1, " entries");
  const c10::cuda::CUDAGuard guard(append_key.device());

  AppendParams p{};
  p.key = append_key.data_ptr();
  p.value = append_value.data_ptr();
  p.key_stride_token = append_key.stride(0);
  p.key_stride_head = append_key.stride(1);
  p.value_stride_token = append_value.stride(0);
  p.value_stride_head = append_value.stride(1);
  p.batch_indices = batch_indices.data_ptr<int32_t>();
  p.positions = positions.data_ptr<int32_t>();
  p.kv_indices = kv_indices.data_ptr<int32_t>();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.k_cache = paged_k_cache.data_ptr();
  p.v_cache = paged_v_cache.data_ptr();
  p.k_stride_page = paged_k_cache.stride(0);
  p.k_stride_token = paged_k_cache.stride(tok);
  p.k_stride_head = paged_k_cache.stride(head);
  p.v_stride_page = paged_v_cache.stride(0);
  p.v_stride_token = paged_v_cache.stride(tok);
  p.v_stride_head = paged_v_cache.stride(head);
  TORCH_CHECK(paged_k_cache.size(tok) > 0, op, ": page_size must be positive");
  p.page_div = make_page_divisor(static_cast<int32_t>(paged_k_cache.size(tok)));
  p.nnz = static_cast<int32_t>(nnz);
  p.num_heads = static_cast<int32_t>(append_key.size(1));
  p.head_dim = static_cast<int32_t>(append_key.size(2));
  p.inv_k_scale = static_cast<float>(1.0 / k_scale);
  p.inv_v_scale = static_cast<float>(1.0 / v_scale);
  check_pdl(enable_pdl, op);
  if (append_key.scalar_type() == at::kHalf) {
    dispatch_cache<tfo::gpu::half_t>(cache_t, p, enable_pdl);
  } else {
    dispatch_cache<tfo::gpu::bf16_t>(cache_t, p, enable_pdl);
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
  if (nnz == 0) return {batch_indices, positions};
  const c10::cuda::CUDAGuard guard(append_indptr.device());
  const int blocks = static_cast<int>((nnz + kPageThreads - 1) / kPageThreads);
  batch_indices_positions_kernel<<<blocks, kPageThreads, 0, current_stream()>>>(
      append_indptr.data_ptr<int32_t>(), seq_lens.data_ptr<int32_t>(), static_cast<int32_t>(batch),
      static_cast<int32_t>(nnz), batch_indices.data_ptr<int32_t>(), positions.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  if (batch == 0) return out;
  const c10::cuda::CUDAGuard guard(kv_indptr.device());
  const int blocks = static_cast<int>((batch + kPageThreads - 1) / kPageThreads);
  seq_lens_kernel<<<blocks, kPageThreads, 0, current_stream()>>>(
      kv_indptr.data_ptr<int32_t>(), kv_last_page_len.data_ptr<int32_t>(),
      static_cast<int32_t>(batch), static_cast<int32_t>(page_size), out.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CUDA, m) {
  m.impl("append_paged_kv_cache", &append_paged_kv_cache);
  m.impl("get_batch_indices_positions", &get_batch_indices_positions);
  m.impl("get_seq_lens", &get_seq_lens);
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
