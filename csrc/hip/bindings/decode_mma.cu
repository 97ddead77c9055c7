// The matrix-core decode family (use_tensor_cores=True), compiled on its own so that the two
// decode families build in parallel. The operators are registered in decode.cu.
#include "decode_launch.h"
#include "kernels/decode/decode_mma.cu"

namespace flashinfer_ops {
namespace gpu_binding {

namespace {

// Whether the device has the shared memory for the wide shape of this configuration (d128 fp16:
// 141 KiB); the shape exists only where copies are asynchronous (decode_mma.cu).
template <typename T, typename KV, int D>
bool wide_shape_fits() {
  if constexpr (tfo::kernels::kMmaDecodeHasWide) {
    return static_cast<size_t>(tfo::kernels::kMmaDecodeSmemBytes<T, KV, D, true>) <= max_block_shared_memory();
  } else {
    return false;
  }
}

// The 4-warp shape's persistent grids: the row form, and the head columns (FP8 caches).
template <typename T, typename KV, int D>
int default_grid() {
  return persistent_grid<&tfo::kernels::decode_mma_kernel<T, KV, D, false>>(
      tfo::kernels::kMmaDecodeThreads<D, false>, tfo::kernels::kMmaDecodeSmemBytes<T, KV, D, false>);
}
// The head columns' grid for a GQA group of `group`: 0 where the kernel does not serve it (16-bit
// caches, groups of more than kHeadColumnsMaxGroup, AMD) or its grid is no larger than the default.
template <typename T, typename KV, int D>
int head_columns_grid(int group) {
  if constexpr (tfo::kernels::kMmaDecodeHasHeadColumns<KV, D, false>) {
    if (group > tfo::kernels::kHeadColumnsMaxGroup) return 0;
    const int grid = persistent_grid<&tfo::kernels::decode_mma_head_columns_kernel<T, KV, D>>(
        tfo::kernels::kMmaDecodeThreads<D, false>, tfo::kernels::kMmaDecodeSmemBytes<T, KV, D, false>);
    return grid > default_grid<T, KV, D>() ? grid : 0;
  } else {
    return 0;
  }
}

template <typename T, typename KV, int D, bool kWide, bool kHeadColumns>
constexpr auto mma_decode_kernel() {
  if constexpr (kHeadColumns) {
    return &tfo::kernels::decode_mma_head_columns_kernel<T, KV, D>;
  } else {
    return &tfo::kernels::decode_mma_kernel<T, KV, D, kWide>;
  }
}

}  // namespace

bool launch_decode_mma(tfo::kernels::DecodeParams& p, at::ScalarType q_dtype, KvKind kv_kind,
                       int head_dim, cudaStream_t stream, bool grid_only, int64_t max_blocks, bool pdl) {
  using namespace tfo::kernels;
  // A launch capped at one block per multiprocessor or fewer (batch 1's splits) takes the wide
  // shape, whose block is resident alone on a multiprocessor (decode_mma.cu).
  const bool capped_to_one_round = max_blocks > 0 && max_blocks <= num_multiprocessors();
  return with_decode_config(q_dtype, head_dim, kv_kind, [&](auto t_tag, auto d_const, auto kv_tag) {
    using T = typename decltype(t_tag)::type;
    using KV = typename decltype(kv_tag)::type;
    constexpr int D = decltype(d_const)::value;
    auto go = [&](auto wide_const, auto head_columns_const) {
      constexpr bool kWide = decltype(wide_const)::value;
      constexpr bool kHeadColumns = decltype(head_columns_const)::value;
      constexpr auto kKernel = mma_decode_kernel<T, KV, D, kWide, kHeadColumns>();
      constexpr int kThreads = kMmaDecodeThreads<D, kWide>;
      constexpr int kSmem = kMmaDecodeSmemBytes<T, KV, D, kWide>;
      p.num_blocks = launch_blocks(persistent_grid<kKernel>(kThreads, kSmem), max_blocks, schedule_task_bound(p));
      if (grid_only) return;
#if !defined(USE_ROCM)
      // The merge by words needs every block resident at once: only the wide shape's launch (a
      // block a multiprocessor, a task a block) takes it, as a cooperative launch; where the
      // device cannot hold that launch at once, or the instance does not merge by words
      // (kMmaDecodeMergesByWords), the launch merges by its counters instead.
      if (kMmaDecodeMergesByWords<D, kWide> && p.merge_words != nullptr) {
        if (launch_kernel_cooperative(kKernel, p.num_blocks, kThreads, kSmem, stream, pdl, p)) return;
      }
#endif
      p.merge_words = nullptr;
      launch_kernel(kKernel, p.num_blocks, kThreads, kSmem, stream, pdl, p);
    };
    if constexpr (kMmaDecodeHasWide) {
      if (capped_to_one_round && wide_shape_fits<T, KV, D>()) return go(std::true_type{}, std::false_type{});
    }
    // FP8 caches with GQA groups of at most 8, where the launch asks for more blocks than the
    // default grid holds and no more than the head-column kernel's four a multiprocessor do
    // (plan()'s deal_decode_tasks; decode_order.cpp has the measurements).
    if constexpr (kMmaDecodeHasHeadColumns<KV, D, false>) {
      if (takes_four_block_grid(max_blocks, default_grid<T, KV, D>(), head_columns_grid<T, KV, D>(p.group_size))) {
        return go(std::false_type{}, std::true_type{});
      }
    }
    go(std::false_type{}, std::false_type{});
  });
}

int64_t decode_mma_head_columns_grid(at::ScalarType q_dtype, KvKind kv_kind, int head_dim, int group_size) {
  int64_t grid = 0;
  with_decode_config(q_dtype, head_dim, kv_kind, [&](auto t_tag, auto d_const, auto kv_tag) {
    using T = typename decltype(t_tag)::type;
    using KV = typename decltype(kv_tag)::type;
    grid = head_columns_grid<T, KV, decltype(d_const)::value>(group_size);
  });
  return grid;
}

bool decode_mma_has_wide_shape(at::ScalarType q_dtype, KvKind kv_kind, int head_dim) {
  bool wide = false;
  with_decode_config(q_dtype, head_dim, kv_kind, [&](auto t_tag, auto d_const, auto kv_tag) {
    using T = typename decltype(t_tag)::type;
    using KV = typename decltype(kv_tag)::type;
    wide = wide_shape_fits<T, KV, decltype(d_const)::value>();
  });
  return wide;
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
