// Launchers of the decode kernel families, shared by the decode bindings (decode.cu registers
// the operators; decode_mma.cu compiles the matrix-core family in its own translation unit).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common.h"

#include "kernels/decode/decode_common.h"

namespace flashinfer_ops {
namespace gpu_binding {

// KV storage relative to q: the same 16-bit type, or an FP8 family (fnuz variants included).
enum class KvKind : int { kSameAsQ = 0, kE4M3 = 1, kE5M2 = 2 };

// The matrix-core family's group tile: the GQA group's query heads are the rows of one tile.
inline constexpr int kMmaGroupTile = 16;

// Launches decode_mma_kernel for (q dtype, kv kind, head_dim) on a persistent grid of at most
// max_blocks blocks (0: no cap) (sets p.num_blocks; with grid_only, sets it and launches
// nothing), as a programmatic dependent launch when pdl; false when this build holds no such
// instantiation.
bool launch_decode_mma(tfo::kernels::DecodeParams& p, at::ScalarType q_dtype, KvKind kv_kind,
                       int head_dim, cudaStream_t stream, bool grid_only = false, int64_t max_blocks = 0,
                       bool pdl = false);

// Whether launch_decode_mma takes the wide shape for (q dtype, kv kind, head_dim) when its launch
// is capped at the multiprocessors or fewer blocks: the shape exists on this platform and the
// device has its shared memory. False where this build holds no such instantiation.
bool decode_mma_has_wide_shape(at::ScalarType q_dtype, KvKind kv_kind, int head_dim);

// The persistent grid of the head-column kernel (FP8 caches, GQA groups of at most 8;
// decode_mma.cu), which launch_decode_mma takes for a launch of more blocks than its default grid
// and no more than this one; 0 where there is none (16-bit caches, larger groups, AMD, a grid no
// larger than the default, or no such instantiation).
int64_t decode_mma_head_columns_grid(at::ScalarType q_dtype, KvKind kv_kind, int head_dim, int group_size);

// The launch's blocks: the persistent grid, or max_blocks when that is positive. Fewer than the
// grid: a persistent launch of fewer blocks. More: one block per task (plan() asks for that only
// where it has as many tasks), which the hardware schedules as slots free up; bounded by
// max_tasks, the most tasks the plan's buffer can hold, since blocks past the tasks only leave.
inline int launch_blocks(int grid, int64_t max_blocks, int64_t max_tasks) {
  if (max_blocks <= 0 || max_blocks == grid) return grid;
  if (max_blocks < grid) return static_cast<int>(max_blocks);
  const int64_t bound = std::min<int64_t>(max_tasks, std::numeric_limits<int32_t>::max());
  return static_cast<int>(std::max<int64_t>(grid, std::min(max_blocks, bound)));
}

// Whether a launch of max_blocks takes a kernel's four-block grid in place of its default one:
// more blocks than the default grid holds and no more than the four-block grid does (plan()'s
// deal_decode_tasks asks for exactly that grid). four_block_grid 0: there is none.
inline bool takes_four_block_grid(int64_t max_blocks, int default_grid, int four_block_grid) {
  return max_blocks > default_grid && max_blocks <= four_block_grid;
}

// The most (item, kv head, head slice) tasks p's schedule buffer can hold.
inline int64_t schedule_task_bound(const tfo::kernels::DecodeParams& p) {
  return int64_t{p.plan_item_slots} * p.num_kv_heads * p.head_slices;
}

// Persistent grid: the device's multiprocessors times the blocks of `kernel` that fit on one.
template <typename Kernel>
int resident_blocks_per_sm(Kernel kernel, int threads, int dynamic_smem_bytes = 0) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, dynamic_smem_bytes) !=
          cudaSuccess ||
      blocks < 1) {
    (void)cudaGetLastError();
    blocks = 1;
  }
  return blocks;
}

// The persistent grid of kKernel on the current device: its multiprocessors times the blocks of
// kKernel that fit on one (opting in to dynamic shared memory above the default, once).
template <auto kKernel>
int persistent_grid(int threads, int dynamic_smem_bytes = 0) {
  static const int per_sm = [&] {
    if (dynamic_smem_bytes > 0) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kKernel),
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_smem_bytes));
    }
    return resident_blocks_per_sm(kKernel, threads, dynamic_smem_bytes);
  }();
  return num_multiprocessors() * per_sm;
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>) for q's element type, when this build instantiates it.
template <typename F>
bool with_q_type(at::ScalarType t, F&& f) {
#if defined(TFO_DTYPE_F16)
  if (t == at::kHalf) {
    f(TypeTag<tfo::gpu::half_t>{});
    return true;
  }
#endif
#if defined(TFO_DTYPE_BF16)
  if (t == at::kBFloat16) {
    f(TypeTag<tfo::gpu::bf16_t>{});
    return true;
  }
#endif
  return false;
}

// Calls f(std::integral_constant<int, D>) for a head_dim this build instantiates.
template <typename F>
bool with_head_dim(int head_dim, F&& f) {
#if defined(TFO_HEAD_DIM_64)
  if (head_dim == 64) {
    f(std::integral_constant<int, 64>{});
    return true;
  }
#endif
#if defined(TFO_HEAD_DIM_128)
  if (head_dim == 128) {
    f(std::integral_constant<int, 128>{});
    return true;
  }
#endif
#if defined(TFO_HEAD_DIM_256)
  if (head_dim == 256) {
    f(std::integral_constant<int, 256>{});
    return true;
  }
#endif
  return false;
}

// Calls f(TypeTag<KV>) for the KV storage tag.
template <typename T, typename F>
void with_kv_storage(KvKind kind, F&& f) {
  switch (kind) {
    case KvKind::kSameAsQ: return f(TypeTag<T>{});
    case KvKind::kE4M3: return f(TypeTag<tfo::kernels::Fp8E4M3>{});
    case KvKind::kE5M2: return f(TypeTag<tfo::kernels::Fp8E5M2>{});
  }
}

// Calls f(TypeTag<T>, std::integral_constant<int, D>, TypeTag<KV>) for a decode configuration
// this build instantiates; false when it holds none.
template <typename F>
bool with_decode_config(at::ScalarType q_dtype, int head_dim, KvKind kv_kind, F&& f) {
  bool served = false;
  with_q_type(q_dtype, [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    served = with_head_dim(head_dim, [&](auto d_const) {
      with_kv_storage<T>(kv_kind, [&](auto kv_tag) { f(t_tag, d_const, kv_tag); });
    });
  });
  return served;
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
