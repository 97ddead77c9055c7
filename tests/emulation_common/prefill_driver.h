// The prefill drivers' common part (tests/amd_emulation/prefill_emulated.cpp and
// tests/cuda_emulation/prefill_emulated.cpp): the kernels launched as the bindings launch them
// (csrc/hip/bindings/prefill.cu), a single request on a (kv heads, q tiles) grid (q tiles x kv
// chunks when split, then merge_split_tiles_kernel), a planned batch (ragged or paged) on a
// persistent grid, then merge_partials_kernel; and the entry point the host tests call. The
// including driver has included its platform emulation and kernels/prefill/prefill_merge.h, and
// defines emu_launch(grid_x, threads, kernel, grid_y = 1) in an unnamed namespace.
#pragma once

#include <type_traits>
#include <vector>

namespace {

namespace pk = tfo::kernels::prefill;
using tfo::gpu::bf16_t;
using tfo::gpu::half_t;

template <typename T, int D, bool kPaged, bool kPlanned, bool kTransform, bool kMasked = false>
void run(const pk::PrefillParams& params, int qo_tokens, int grid_blocks, int chunk_tiles) {
  using Policy = pk::PrefillPolicy<D, kPlanned, kTransform, kMasked>;
  static_assert(Policy::kSmemBytes <= static_cast<int>(sizeof(pk::prefill_smem)), "shared memory");
  pk::PrefillParams p = params;
  if constexpr (!kPlanned) {
    namespace ss = flashinfer_ops::single_split;
    const int group = p.num_qo_heads / p.num_kv_heads;
    const ss::Geometry g = pk::single_geometry(p, group, Policy::kTileRows, Policy::kKvTile);
    const int tiles = ss::num_tiles(g);
    const ss::Split split = chunk_tiles > 0 ? ss::split_with_chunk(g, chunk_tiles) : ss::Split{};
    if (split.splits == 1) {
      emu_launch(p.num_kv_heads, Policy::kThreads,
                 [&] { pk::prefill_kernel<T, D, kPaged, kPlanned, kTransform>(p, 0); }, tiles);
      return;
    }
    // The split launch and its merge, with the bindings' partial buffers.
    std::vector<T> split_o(static_cast<size_t>(split.splits) * p.qo_len * p.num_qo_heads * D);
    std::vector<float> split_lse(static_cast<size_t>(split.splits) * p.qo_len * p.num_qo_heads);
    p.split_o = split_o.data();
    p.partial_lse = split_lse.data();
    p.kv_splits = split.splits;
    p.kv_chunk_tiles = split.chunk_tiles;
    emu_launch(p.num_kv_heads, Policy::kThreads,
               [&] { pk::prefill_kernel<T, D, kPaged, kPlanned, kTransform, false, true>(p, 0); },
               tiles * split.splits);
    emu_launch(2, pk::kMergeThreads,
               [&] { pk::merge_split_tiles_kernel<T, D>(p, Policy::kTileRows, Policy::kKvTile, 2); });
  } else {
    emu_launch(grid_blocks, Policy::kThreads,
               [&] { pk::prefill_kernel<T, D, kPaged, kPlanned, kTransform, kMasked>(p, grid_blocks); });
    emu_launch(2, pk::kMergeThreads, [&] { pk::merge_partials_kernel<T, D>(p, qo_tokens, 2); });
  }
}

template <typename T, int D>
void run_kind(const pk::PrefillParams& p, int kind, int qo_tokens, int grid_blocks, int chunk_tiles) {
  const bool transform = p.cap_log2e > 0.0f || !(p.logit_scale > 0.0f);
  auto go = [&](auto paged, auto planned) {
    constexpr bool kPaged = decltype(paged)::value, kPlanned = decltype(planned)::value;
    // Batches with custom masks: the planned kernels' masked instantiation, as the bindings pick.
    if constexpr (pk::PrefillPolicy<D, kPlanned>::kHasMaskedVariant) {
      if (p.custom_mask != nullptr) {
        if (transform) run<T, D, kPaged, kPlanned, true, true>(p, qo_tokens, grid_blocks, chunk_tiles);
        else run<T, D, kPaged, kPlanned, false, true>(p, qo_tokens, grid_blocks, chunk_tiles);
        return;
      }
    }
    if (transform) run<T, D, kPaged, kPlanned, true>(p, qo_tokens, grid_blocks, chunk_tiles);
    else run<T, D, kPaged, kPlanned, false>(p, qo_tokens, grid_blocks, chunk_tiles);
  };
  using F = std::false_type;
  using Tr = std::true_type;
  if (kind == 0) go(F{}, F{});
  else if (kind == 1) go(F{}, Tr{});
  else go(Tr{}, Tr{});
}

}  // namespace

// kind: 0 single request (qo_len, kv_len), 1 planned ragged batch, 2 planned paged batch. dtype:
// 0 float16, 1 bfloat16. Arguments as the bindings set PrefillParams (scales combined there);
// chunk_tiles > 0: a single request split over kv in chunks of that many K/V tiles.
// Returns 0, or -1 for a head dim not built.
extern "C" __attribute__((visibility("default"))) int tfo_emu_prefill(
    int dtype, int head_dim, int kind, int qo_tokens, int grid_blocks, const void* q, int q_stride_token,
    int q_stride_head, void* o, int o_stride_token, int o_stride_head, float* lse, const void* k, const void* v,
    int kv_stride_page, int kv_stride_token, int kv_stride_head, int page_size, const int32_t* qo_indptr,
    const int32_t* kv_indptr, const int32_t* kv_indices, const int32_t* kv_last_page_len, const int32_t* plan,
    int qo_len, int kv_len, float* partial_o, float* partial_lse, const uint8_t* custom_mask,
    const int32_t* mask_indptr, int num_qo_heads, int num_kv_heads, int causal, int window_left,
    float logit_scale, float cap_log2e, float o_scale, int chunk_tiles) {
  pk::PrefillParams p;
  p.q = q;
  p.q_stride_token = q_stride_token;
  p.q_stride_head = q_stride_head;
  p.o = o;
  p.o_stride_token = o_stride_token;
  p.o_stride_head = o_stride_head;
  p.lse = lse;
  p.k = k;
  p.v = v;
  p.kv_stride_page = kv_stride_page;
  p.kv_stride_token = kv_stride_token;
  p.kv_stride_head = kv_stride_head;
  if (page_size > 0) p.page_div = tfo::kernels::make_page_divisor(page_size);  // 0: contiguous K/V
  p.qo_indptr = qo_indptr;
  p.kv_indptr = kv_indptr;
  p.kv_indices = kv_indices;
  p.kv_last_page_len = kv_last_page_len;
  p.plan = plan;
  p.qo_len = qo_len;
  p.kv_len = kv_len;
  p.partial_o = partial_o;
  p.partial_lse = partial_lse;
  p.custom_mask = custom_mask;
  p.mask_indptr = mask_indptr;
  p.num_qo_heads = num_qo_heads;
  p.num_kv_heads = num_kv_heads;
  p.group_div = tfo::kernels::make_page_divisor(num_qo_heads / num_kv_heads);
  p.causal = causal != 0;
  p.window_left = window_left;
  p.logit_scale = logit_scale;
  p.cap_log2e = cap_log2e;
  p.o_scale = o_scale;
  auto by_dim = [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    switch (head_dim) {
      case 64: run_kind<T, 64>(p, kind, qo_tokens, grid_blocks, chunk_tiles); return 0;
      case 128: run_kind<T, 128>(p, kind, qo_tokens, grid_blocks, chunk_tiles); return 0;
      case 256: run_kind<T, 256>(p, kind, qo_tokens, grid_blocks, chunk_tiles); return 0;
      default: return -1;
    }
  };
  return dtype == 0 ? by_dim(std::type_identity<half_t>{}) : by_dim(std::type_identity<bf16_t>{});
}
