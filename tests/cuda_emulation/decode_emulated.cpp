// The decode kernels (csrc/hip/kernels/decode) built on the CUDA backend and run under the
// warp32 host emulation, launched as the NVIDIA bindings launch them (bindings/decode.cu,
// decode_mma.cu): the CUDA-core kernel, the tensor-core kernel in its 4-warp and wide shapes and
// with the query heads as columns, and split requests merged inside the launch (arrival counters)
// or by the merge launch after it.
// Built by tests/test_cuda_emulated.py.
#include "warp32_emulation.h"
#include "../emulation_common/guarded_plan.h"

// The CUDA-core kernel and the split merge keep __shared__ variables (statics here); the
// tensor-core kernel's extern __shared__ array is the buffer defined below.
#include "kernels/decode/decode_simt.cu"
#undef TFO_EMU32_SHARED
#define TFO_EMU32_SHARED
#include "kernels/decode/decode_mma.cu"

namespace tfo::kernels {
// The dynamic shared memory that decode_mma_kernel declares extern; blocks run one at a time.
alignas(128) uint8_t decode_smem[256 * 1024];
}  // namespace tfo::kernels

unsigned char* tfo_emu32::shared_anchor = tfo::kernels::decode_smem;

namespace {

using namespace tfo::kernels;
using tfo::gpu::bf16_t;
using tfo::gpu::half_t;

// family: 0 CUDA cores, 1 tensor cores (4-warp shape), 2 tensor cores (wide shape), 3 CUDA cores
// with the 4-row tile at four blocks per multiprocessor (what run() launches for a 16-bit cache
// when the plan asks for it; FP8 caches take it as family 0), 4 tensor cores with the query heads
// as columns (what run() launches for an FP8 cache and a group of at most 8 when the plan asks
// for its grid; -1 for other caches and groups), 5 the wide shape merging split requests by words
// (the cooperative launch run() makes of a plan of one task a block): every block at once, the
// words after the split counters' kSplitCounterSlots (plan_info.h), as the bindings lay them out.
template <typename T, typename KV, int D>
int run_family(DecodeParams& p, int batch, int family) {
  if (family == 0 || family == 3) {
    const int tile = simt_group_tile<kIsFp8<KV>>(p.group_size);
    p.head_slices = (p.group_size + tile - 1) / tile;
    auto go = [&](auto g_const) {
      constexpr int G = decltype(g_const)::value;
      if constexpr (G == 4) {
        if (family == 3) {
          tfo_emu32::launch(p.num_blocks, kDecodeThreads, [&] { decode_simt_kernel<T, KV, D, 4, true>(p); });
          return;
        }
      }
      tfo_emu32::launch(p.num_blocks, kDecodeThreads, [&] { decode_simt_kernel<T, KV, D, G>(p); });
    };
    if constexpr (std::is_same_v<KV, T>) {
      if (tile == 1) go(std::integral_constant<int, 1>{});
    }
    if (tile == 8) go(std::integral_constant<int, 8>{});
    else if (tile == 4) go(std::integral_constant<int, 4>{});
  } else {
    p.head_slices = (p.group_size + 15) / 16;
    auto go = [&](auto wide_const, auto head_columns_const) {
      constexpr bool kWide = decltype(wide_const)::value;
      constexpr bool kHeadColumns = decltype(head_columns_const)::value;
      static_assert(kMmaDecodeSmemBytes<T, KV, D, kWide> <= static_cast<int>(sizeof(decode_smem)), "shared memory");
      tfo_emu32::launch(p.num_blocks, kMmaDecodeThreads<D, kWide>, [&] {
        if constexpr (kHeadColumns) {
          decode_mma_head_columns_kernel<T, KV, D>(p);
        } else {
          decode_mma_kernel<T, KV, D, kWide>(p);
        }
      });
    };
    if (family == 5) {
      if (p.split_counters == nullptr) return -1;
      p.merge_words = reinterpret_cast<uint64_t*>(p.split_counters + flashinfer_ops::plan_info::kSplitCounterSlots);
      tfo_emu32::launch_concurrent(p.num_blocks, kMmaDecodeThreads<D, true>, kMmaDecodeSmemBytes<T, KV, D, true>,
                                   [&] { decode_mma_kernel<T, KV, D, true>(p); });
    } else if (family == 2) {
      go(std::true_type{}, std::false_type{});
    } else if (family == 4) {
      if constexpr (!kMmaDecodeHasHeadColumns<KV, D, false>) return -1;
      else if (p.group_size > kHeadColumnsMaxGroup) return -1;
      else go(std::false_type{}, std::true_type{});
    } else {
      go(std::false_type{}, std::false_type{});
    }
  }
  if (p.split_counters == nullptr) {
    const int rows = batch * p.num_qo_heads;
    tfo_emu32::launch((rows + kMergeWaves - 1) / kMergeWaves, kMergeWaves * tfo_emu32::kWarp,
                      [&] { decode_merge_kernel<T>(p, batch, D); });
  }
  return 0;
}

template <typename T, typename KV>
int run_kv(DecodeParams& p, int batch, int head_dim, int family) {
  switch (head_dim) {
    case 64: return run_family<T, KV, 64>(p, batch, family);
    case 128: return run_family<T, KV, 128>(p, batch, family);
    case 256: return run_family<T, KV, 256>(p, batch, family);
    default: return -1;
  }
}

template <typename T>
int run_q(DecodeParams& p, int kv_kind, int batch, int head_dim, int family) {
  switch (kv_kind) {
    case 0: return run_kv<T, T>(p, batch, head_dim, family);
    case 1: return run_kv<T, Fp8E4M3>(p, batch, head_dim, family);
    case 2: return run_kv<T, Fp8E5M2>(p, batch, head_dim, family);
    default: return -1;
  }
}

}  // namespace

// Batch decode over a paged cache with a plan from the library's planner (plan_size int32: the
// prefix a run reads, or more). q_dtype: 0 float16,
// 1 bfloat16; kv_kind: 0 q's dtype, 1 FP8 e4m3 (OCP), 2 FP8 e5m2; family as run_family's.
// Integer arguments as the bindings set DecodeParams; scales already combined there.
// split_counters: zeroed arrival counters (one per request, kv head and head slice) to merge
// split requests inside the launch, or null for the merge launch. Returns 0, or -1 when the
// configuration is not instantiated.
extern "C" __attribute__((visibility("default"))) int tfo_emu32_batch_decode(
    int q_dtype, int kv_kind, int head_dim, int family, int batch, int num_qo_heads, int num_kv_heads,
    int num_blocks, const void* q, int q_stride_batch, int q_stride_head, void* o, int o_stride_batch,
    int o_stride_head, float* lse, float* partial_o, float* partial_lse, int32_t* split_counters, const void* k,
    const void* v, int k_stride_page, int k_stride_token, int k_stride_head, int v_stride_page, int v_stride_token,
    int v_stride_head, int page_size, const int32_t* kv_indptr, const int32_t* kv_indices,
    const int32_t* kv_last_page_len, const int32_t* plan, int plan_size, int window_left, float q_scale,
    float cap_log2, float v_scale) {
  // The kernels see a copy of the plan's plan_size int32 that ends at a page with no access.
  const tfo_emu_common::GuardedPlan guarded(plan, plan_size);
  DecodeParams p{};
  p.q = q;
  p.q_stride_batch = q_stride_batch;
  p.q_stride_head = q_stride_head;
  p.o = o;
  p.o_stride_batch = o_stride_batch;
  p.o_stride_head = o_stride_head;
  p.lse = lse;
  p.partial_o = partial_o;
  p.partial_lse = partial_lse;
  p.split_counters = split_counters;
  p.k = k;
  p.v = v;
  p.k_stride_page = k_stride_page;
  p.k_stride_token = k_stride_token;
  p.k_stride_head = k_stride_head;
  p.v_stride_page = v_stride_page;
  p.v_stride_token = v_stride_token;
  p.v_stride_head = v_stride_head;
  p.page_div = make_page_divisor(page_size);
  p.kv_indptr = kv_indptr;
  p.kv_indices = kv_indices;
  p.kv_last_page_len = kv_last_page_len;
  p.plan = guarded.data();
  p.plan_item_slots = static_cast<int32_t>(flashinfer_ops::plan_info::item_slots(plan_size));
  p.num_qo_heads = num_qo_heads;
  p.num_kv_heads = num_kv_heads;
  p.group_size = num_qo_heads / num_kv_heads;
  p.num_blocks = num_blocks;
  p.window_left = window_left;
  p.q_scale = q_scale;
  p.cap_log2 = cap_log2;
  p.v_scale = v_scale;
  p.kv_ocp_e4m3 = kv_kind == 1;
  return q_dtype == 0 ? run_q<half_t>(p, kv_kind, batch, head_dim, family)
                      : run_q<bf16_t>(p, kv_kind, batch, head_dim, family);
}
