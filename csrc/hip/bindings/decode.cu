// GPU bindings of the decode operators: single_decode and batch_decode_paged_run.
//
// Host work is argument checks on shapes, dtypes and strides only: no device data is read, the
// grid is persistent and sized from the device's capacity (decode_common.h), so a run captured
// in a CUDA/HIP graph replays correctly after a later plan() rewrites the schedule in place.
// use_tensor_cores selects the kernel family: decode_simt (vector units) or decode_mma (matrix
// cores, the GQA group as the rows of a 16-row tile); both compute the same attention.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <torch/library.h>

#include "decode_launch.h"
#include "kernels/decode/decode_simt.cu"

namespace flashinfer_ops {
namespace gpu_binding {
namespace {

using tfo::kernels::DecodeParams;

constexpr float kLog2e = 1.4426950408889634f;
constexpr int64_t kLayoutNHD = 0, kLayoutHND = 1;
// Single requests split over the GPU when their kv heads fill less than this many blocks per
// multiprocessor; chunks are at least kMinSplitChunk tokens.
constexpr int kSplitBlocksPerSm = 2;
constexpr int kMinSplitChunk = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#if defined(TFO_TIMELINE)
// A profiling build's timeline buffer (set_decode_timeline), handed to every decode launch.
struct TimelineBuffer {
  int64_t* records = nullptr;
  int32_t tasks = 0;
};
TimelineBuffer& timeline_buffer() {
  static TimelineBuffer buffer;
  return buffer;
}
#endif

// Element type of the KV cache relative to q, and the power of two its FP8 decode leaves out.
KvKind kv_kind_of(at::ScalarType kv, at::ScalarType q, float& factor, const char* op) {
  using tfo::kernels::Fp8Format;
  using tfo::kernels::fp8_decode_factor;
  factor = 1.f;
  if (kv == q) return KvKind::kSameAsQ;
  switch (kv) {
    case at::kFloat8_e4m3fn: factor = fp8_decode_factor(Fp8Format::kE4M3Fn); return KvKind::kE4M3;
    case at::kFloat8_e4m3fnuz: factor = fp8_decode_factor(Fp8Format::kE4M3Fnuz); return KvKind::kE4M3;
    case at::kFloat8_e5m2: factor = fp8_decode_factor(Fp8Format::kE5M2); return KvKind::kE5M2;
    case at::kFloat8_e5m2fnuz: factor = fp8_decode_factor(Fp8Format::kE5M2Fnuz); return KvKind::kE5M2;
    default: break;
  }
  TORCH_CHECK(false, op, ": the KV cache must be q's dtype (", q,
              ") or a float8 type (e4m3fn, e5m2, e4m3fnuz, e5m2fnuz) on the GPU, got ", kv);
  return KvKind::kSameAsQ;
}

void check_vec_aligned(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.stride(-1) == 1, op, ": ", name, " must be contiguous in its last dimension");
  for (int64_t i = 0; i + 1 < t.dim(); ++i) {
    TORCH_CHECK(t.size(i) <= 1 || t.stride(i) % 8 == 0, op, ": ", name,
                " strides must be multiples of 8 elements (16-byte vector loads), got ", t.strides());
    TORCH_CHECK(t.stride(i) < (int64_t{1} << 31), op, ": ", name, " strides must fit in int32, got ",
                t.strides());
  }
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % (8 * t.element_size()) == 0, op, ": ",
              name, " must be aligned to ", 8 * t.element_size(), " bytes");
}

// The matrix-core family copies FP8 rows in 16-byte chunks (16 elements).
void check_fp8_rows_16b(const at::Tensor& t, const char* name, const char* op) {
  for (int64_t i = 0; i + 1 < t.dim(); ++i) {
    TORCH_CHECK(t.size(i) <= 1 || t.stride(i) % 16 == 0, op, ": ", name,
                " is FP8: with use_tensor_cores=True its strides must be multiples of 16 elements, got ",
                t.strides());
  }
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, op, ": ", name,
              " is FP8: with use_tensor_cores=True it must be aligned to 16 bytes");
}

void check_q_and_out(const at::Tensor& q, const at::Tensor& o, const std::optional<at::Tensor>& lse,
                     int64_t rows, const char* op) {
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16, op,
              ": q must be float16 or bfloat16, got ", q.scalar_type());
  check_vec_aligned(q, "q", op);
  TORCH_CHECK(o.sizes() == q.sizes() && o.scalar_type() == q.scalar_type() && o.stride(-1) == 1, op,
              ": o must have q's shape ", q.sizes(), " and dtype ", q.scalar_type(),
              " with a contiguous last dimension");
  check_cuda(o, "o", op);
  if (lse.has_value()) {
    check_cuda(*lse, "lse", op);
    TORCH_CHECK(lse->scalar_type() == at::kFloat && lse->is_contiguous() &&
                    lse->numel() == rows * q.size(-2),
                op, ": lse must be contiguous float32 with ", rows * q.size(-2), " elements");
  }
}

void set_scales(DecodeParams& p, double sm_scale, double logits_soft_cap, double k_scale,
                double v_scale, float fp8_factor, int64_t window_left, const char* op) {
  TORCH_CHECK(window_left >= -1, op, ": window_left must be -1 (off) or >= 0, got ", window_left);
  TORCH_CHECK(logits_soft_cap >= 0.0, op, ": logits_soft_cap must be >= 0, got ", logits_soft_cap);
  const float ks = static_cast<float>(k_scale) * fp8_factor;
  if (logits_soft_cap > 0.0) {
    p.q_scale = static_cast<float>(sm_scale / logits_soft_cap) * ks;
    p.cap_log2 = static_cast<float>(logits_soft_cap) * kLog2e;
  } else {
    p.q_scale = static_cast<float>(sm_scale) * kLog2e * ks;
    p.cap_log2 = 0.f;
  }
  p.v_scale = static_cast<float>(v_scale) * fp8_factor;
  p.window_left = static_cast<int32_t>(window_left);
}

int simt_tile(int group, KvKind kv_kind) {
  return kv_kind == KvKind::kSameAsQ ? tfo::kernels::simt_group_tile<false>(group)
                                     : tfo::kernels::simt_group_tile<true>(group);
}

// Launches the chosen family on its persistent grid (sets p.num_blocks; with grid_only, sets it
// and launches nothing). False when this build holds no such instantiation.
bool launch_family(DecodeParams& p, at::ScalarType q_dtype, KvKind kv_kind, int head_dim,
                   bool use_tensor_cores, cudaStream_t stream, bool grid_only, int64_t max_blocks = 0,
                   bool pdl = false) {
  using namespace tfo::kernels;
  if (use_tensor_cores) return launch_decode_mma(p, q_dtype, kv_kind, head_dim, stream, grid_only, max_blocks, pdl);
  const int tile = simt_tile(p.group_size, kv_kind);
  return with_decode_config(q_dtype, head_dim, kv_kind, [&](auto t_tag, auto d_const, auto kv_tag) {
    using T = typename decltype(t_tag)::type;
    using KV = typename decltype(kv_tag)::type;
    constexpr int D = decltype(d_const)::value;
    auto go = [&](auto g_const) {
      constexpr int G = decltype(g_const)::value;
      auto run = [&](auto kernel_const) {
        constexpr auto kKernel = decltype(kernel_const)::value;
        p.num_blocks = launch_blocks(persistent_grid<kKernel>(kDecodeThreads), max_blocks, schedule_task_bound(p));
        if (!grid_only) launch_kernel(kKernel, p.num_blocks, kDecodeThreads, 0, stream, pdl, p);
      };
      // 16-bit caches' 4-row tile at four blocks per multiprocessor where the launch asks for
      // more blocks than three a multiprocessor hold and no more than four do (plan()'s
      // deal_decode_tasks; decode_simt.cu has the measurements).
      if constexpr (G == 4 && std::is_same_v<KV, T> && kMinBlocksCapsRegisters) {
        constexpr auto kFour = &decode_simt_kernel<T, KV, D, 4, true>;
        if (takes_four_block_grid(max_blocks, persistent_grid<&decode_simt_kernel<T, KV, D, 4>>(kDecodeThreads),
                                  persistent_grid<kFour>(kDecodeThreads))) {
          return run(std::integral_constant<decltype(kFour), kFour>{});
        }
      }
      constexpr auto kDefault = &decode_simt_kernel<T, KV, D, G>;
      run(std::integral_constant<decltype(kDefault), kDefault>{});
    };
    if constexpr (std::is_same_v<KV, T>) {
      if (tile == 1) return go(std::integral_constant<int, 1>{});
    }
    if (tile == 8) return go(std::integral_constant<int, 8>{});
    go(std::integral_constant<int, 4>{});
  });
}

// Launches the chosen family, then (when requests may be split) the merge of partial results;
// both as programmatic dependent launches when pdl.
void launch(DecodeParams& p, at::ScalarType q_dtype, KvKind kv_kind, int head_dim, int batch,
            bool use_tensor_cores, bool merge, const char* op, int64_t max_blocks = 0, bool pdl = false) {
  using namespace tfo::kernels;
  const cudaStream_t stream = current_stream();
#if defined(TFO_TIMELINE)
  p.timeline = timeline_buffer().records;
  p.timeline_tasks = timeline_buffer().tasks;
#endif
  const bool launched =
      launch_family(p, q_dtype, kv_kind, head_dim, use_tensor_cores, stream, false, max_blocks, pdl);
  TORCH_CHECK(launched, op, ": head_dim ", head_dim, " with q dtype ", q_dtype,
              " is not instantiated in this build (setup.py knobs TFO_HEAD_DIMS / TFO_DTYPES)");
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!merge) return;
  with_q_type(q_dtype, [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    const int64_t rows = static_cast<int64_t>(batch) * p.num_qo_heads;
    const int blocks = static_cast<int>(ceil_div(rows, kMergeWaves));
    launch_kernel(&decode_merge_kernel<T>, blocks, kMergeWaves * tfo::gpu::kWaveSize, 0, stream, pdl, p,
                  static_cast<int32_t>(batch), static_cast<int32_t>(head_dim));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void set_heads(DecodeParams& p, int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores,
               KvKind kv_kind, const char* op) {
  TORCH_CHECK(num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0, op, ": num_qo_heads (",
              num_qo_heads, ") must be a multiple of num_kv_heads (", num_kv_heads, ")");
  p.num_qo_heads = static_cast<int32_t>(num_qo_heads);
  p.num_kv_heads = static_cast<int32_t>(num_kv_heads);
  p.group_size = static_cast<int32_t>(num_qo_heads / num_kv_heads);
  const int tile = use_tensor_cores ? kMmaGroupTile : simt_tile(p.group_size, kv_kind);
  p.head_slices = static_cast<int32_t>(ceil_div(p.group_size, tile));
}

void single_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& o,
                   const std::optional<at::Tensor>& maybe_lse, int64_t kv_layout,
                   int64_t window_left, double sm_scale, double logits_soft_cap, double k_scale,
                   double v_scale, bool use_tensor_cores) {
  const char* op = "single_decode";
  check_cuda(q, "q", op);
  check_cuda(k, "k", op);
  check_cuda(v, "v", op);
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
  TORCH_CHECK(q.dim() == 2, op, ": q must be [num_qo_heads, head_dim]");
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes() && k.scalar_type() == v.scalar_type(), op,
              ": k and v must be 3-D of equal shape and dtype");
  TORCH_CHECK(k.size(2) == q.size(1), op, ": head_dim of q (", q.size(1), ") and k (", k.size(2),
              ") differ");
  check_q_and_out(q, o, maybe_lse, 1, op);
  check_vec_aligned(k, "k", op);
  check_vec_aligned(v, "v", op);
  const c10::cuda::CUDAGuard guard(q.device());

  float factor = 1.f;
  const KvKind kv_kind = kv_kind_of(k.scalar_type(), q.scalar_type(), factor, op);
  if (use_tensor_cores && kv_kind != KvKind::kSameAsQ) {
    check_fp8_rows_16b(k, "k", op);
    check_fp8_rows_16b(v, "v", op);
  }
  const int tok = kv_layout == kLayoutNHD ? 0 : 1, head = 1 - tok;
  const int64_t kv_len = k.size(tok);
  TORCH_CHECK(kv_len < (int64_t{1} << 31), op, ": kv_len must fit in int32");
  DecodeParams p{};
  set_heads(p, q.size(0), k.size(head), use_tensor_cores, kv_kind, op);
  p.q = q.data_ptr();
  p.q_stride_batch = 0;
  p.q_stride_head = static_cast<int32_t>(q.stride(0));
  p.o = o.data_ptr();
  p.o_stride_batch = 0;
  p.o_stride_head = static_cast<int32_t>(o.stride(0));
  p.lse = maybe_lse.has_value() ? maybe_lse->data_ptr<float>() : nullptr;
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.k_stride_token = static_cast<int32_t>(k.stride(tok));
  p.k_stride_head = static_cast<int32_t>(k.stride(head));
  p.v_stride_token = static_cast<int32_t>(v.stride(tok));
  p.v_stride_head = static_cast<int32_t>(v.stride(head));
  // The sequence is one page (id 0) of kv_len tokens; the page table is a device zero (a fill
  // kernel, so this stays capturable).
  const at::Tensor page_table = at::zeros({1}, q.options().dtype(at::kInt));
  p.kv_indices = page_table.data_ptr<int32_t>();
  p.page_div = tfo::kernels::make_page_divisor(static_cast<int32_t>(std::max<int64_t>(kv_len, 1)));
  p.k_stride_page = 0;
  p.v_stride_page = 0;
  set_scales(p, sm_scale, logits_soft_cap, k_scale, v_scale, factor, window_left, op);
  p.kv_ocp_e4m3 = k.scalar_type() == at::kFloat8_e4m3fn;

  // Split the kv sequence when its heads alone would leave the GPU idle (shapes only).
  const int64_t tasks = static_cast<int64_t>(p.num_kv_heads) * p.head_slices;
  const int64_t target = static_cast<int64_t>(kSplitBlocksPerSm) * num_multiprocessors();
  int64_t chunk = std::max<int64_t>(kv_len, 1), splits = 1;
  if (kv_len >= 2 * kMinSplitChunk && tasks < target) {
    chunk = std::max<int64_t>(kMinSplitChunk, ceil_div(kv_len, ceil_div(target, tasks)));
    chunk = ceil_div(chunk, 64) * 64;
    splits = ceil_div(kv_len, chunk);
  }
  p.plan = nullptr;
  p.single_kv_len = static_cast<int32_t>(kv_len);
  p.single_chunk = static_cast<int32_t>(chunk);
  p.single_splits = static_cast<int32_t>(splits);
  at::Tensor partial_o, partial_lse;
  if (splits > 1) {
    const auto f32 = q.options().dtype(at::kFloat);
    partial_o = at::empty({splits, q.size(0), q.size(1)}, f32);
    partial_lse = at::empty({splits, q.size(0)}, f32);
    p.partial_o = partial_o.data_ptr<float>();
    p.partial_lse = partial_lse.data_ptr<float>();
  }
  launch(p, q.scalar_type(), kv_kind, static_cast<int>(q.size(1)), 1, use_tensor_cores, splits > 1, op);
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
  const char* op = "batch_decode_paged_run";
  for (auto [t, name] : {std::pair<const at::Tensor*, const char*>{&q, "q"}, {&paged_k, "paged_k"},
                         {&paged_v, "paged_v"}, {&kv_indptr, "kv_indptr"}, {&kv_indices, "kv_indices"},
                         {&kv_last_page_len, "kv_last_page_len"}, {&plan_info, "plan_info"},
                         {&partial_o, "partial_o"}, {&partial_lse, "partial_lse"},
                         {&split_counters, "split_counters"}}) {
    check_cuda(*t, name, op);
    TORCH_CHECK(t->device() == q.device(), op, ": ", name, " is on ", t->device(), " but q is on ",
                q.device());
  }
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
  TORCH_CHECK(q.dim() == 3, op, ": q must be [batch_size, num_qo_heads, head_dim]");
  const int64_t batch = q.size(0);
  check_q_and_out(q, o, maybe_lse, batch, op);
  TORCH_CHECK(paged_k.dim() == 4 && paged_k.sizes() == paged_v.sizes() &&
                  paged_k.scalar_type() == paged_v.scalar_type(),
              op, ": paged k/v caches must be 4-D, of equal shape and dtype");
  TORCH_CHECK(paged_k.size(3) == q.size(2), op, ": head_dim of q (", q.size(2),
              ") and the kv cache (", paged_k.size(3), ") differ");
  check_vec_aligned(paged_k, "paged_k", op);
  check_vec_aligned(paged_v, "paged_v", op);
  for (auto [t, name] : {std::pair<const at::Tensor*, const char*>{&kv_indptr, "kv_indptr"},
                         {&kv_indices, "kv_indices"}, {&kv_last_page_len, "kv_last_page_len"},
                         {&plan_info, "plan_info"}, {&split_counters, "split_counters"}}) {
    TORCH_CHECK(t->scalar_type() == at::kInt && t->dim() == 1 && t->is_contiguous(), op, ": ",
                name, " must be a contiguous 1-D int32 tensor");
  }
  TORCH_CHECK(kv_indptr.numel() == batch + 1 && kv_last_page_len.numel() == batch, op,
              ": kv_indptr must have batch_size + 1 = ", batch + 1,
              " entries and kv_last_page_len batch_size entries");
  // A block reads its first item with the header (plan_info.h), before it knows the item count:
  // the buffer must hold at least the header and one item (plan() buffers hold far more).
  TORCH_CHECK(plan_info.numel() >= flashinfer_ops::plan_info::size_for(1, 0), op, ": plan_info must hold at least ",
              flashinfer_ops::plan_info::size_for(1, 0), " int32 (plan() makes it), got ", plan_info.numel());
  TORCH_CHECK(partial_o.scalar_type() == at::kFloat && partial_o.is_contiguous() &&
                  partial_lse.scalar_type() == at::kFloat && partial_lse.is_contiguous(),
              op, ": partial_o and partial_lse must be contiguous float32");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(partial_o.data_ptr()) % 16 == 0, op,
              ": partial_o must be 16-byte aligned (its rows are read and written 16 bytes at a time)");
  const c10::cuda::CUDAGuard guard(q.device());

  float factor = 1.f;
  const KvKind kv_kind = kv_kind_of(paged_k.scalar_type(), q.scalar_type(), factor, op);
  if (use_tensor_cores && kv_kind != KvKind::kSameAsQ) {
    check_fp8_rows_16b(paged_k, "paged_k", op);
    check_fp8_rows_16b(paged_v, "paged_v", op);
  }
  const int tok = kv_layout == kLayoutNHD ? 1 : 2, head = kv_layout == kLayoutNHD ? 2 : 1;
  DecodeParams p{};
  set_heads(p, q.size(1), paged_k.size(head), use_tensor_cores, kv_kind, op);
  p.q = q.data_ptr();
  p.q_stride_batch = static_cast<int32_t>(q.stride(0));
  p.q_stride_head = static_cast<int32_t>(q.stride(1));
  p.o = o.data_ptr();
  TORCH_CHECK(o.stride(0) < (int64_t{1} << 31), op, ": o strides must fit in int32");
  p.o_stride_batch = static_cast<int32_t>(o.stride(0));
  p.o_stride_head = static_cast<int32_t>(o.stride(1));
  p.lse = maybe_lse.has_value() ? maybe_lse->data_ptr<float>() : nullptr;
  p.partial_o = partial_o.data_ptr<float>();
  p.partial_lse = partial_lse.data_ptr<float>();
  p.k = paged_k.data_ptr();
  p.v = paged_v.data_ptr();
  p.k_stride_page = static_cast<int32_t>(paged_k.stride(0));
  p.k_stride_token = static_cast<int32_t>(paged_k.stride(tok));
  p.k_stride_head = static_cast<int32_t>(paged_k.stride(head));
  p.v_stride_page = static_cast<int32_t>(paged_v.stride(0));
  p.v_stride_token = static_cast<int32_t>(paged_v.stride(tok));
  p.v_stride_head = static_cast<int32_t>(paged_v.stride(head));
  TORCH_CHECK(paged_k.size(tok) > 0, op, ": page_size must be positive");
  p.page_div = tfo::kernels::make_page_divisor(static_cast<int32_t>(paged_k.size(tok)));
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.kv_indices = kv_indices.data_ptr<int32_t>();
  p.kv_last_page_len = kv_last_page_len.data_ptr<int32_t>();
  p.plan = plan_info.data_ptr<int32_t>();
  p.plan_item_slots = static_cast<int32_t>(
      std::min<int64_t>(flashinfer_ops::plan_info::item_slots(plan_info.numel()), std::numeric_limits<int32_t>::max()));
  set_scales(p, sm_scale, logits_soft_cap, k_scale, v_scale, factor, window_left, op);
  p.kv_ocp_e4m3 = paged_k.scalar_type() == at::kFloat8_e4m3fn;
  if (batch == 0) return;
  // Split requests merge inside the decode launch when the (request, kv head, head slice) groups
  // fit in one round of the persistent grid (the planner split them to fill the GPU; measured
  // 1.04-1.10x at batch 1) or the launch is of its plan's size (below), and every group has a
  // counter; otherwise a merge launch follows (between one and two rounds of the whole grid,
  // merging in the last block of each group lengthens the tail: 0.95x at batch 64).
  const int64_t groups = batch * p.num_kv_heads * p.head_slices;
  // plan()'s task blocks count (item, kv head) tasks; each has head_slices blocks' worth of
  // work. Whatever the launch's size (launch_blocks), its blocks take every task in turn.
  TORCH_CHECK(task_blocks >= 0, op, ": task_blocks must be >= 0, got ", task_blocks);
  check_pdl(enable_pdl, op);
  const int64_t max_blocks = task_blocks * p.head_slices;
  // The groups must fit one round of the blocks resident at once, also where the launch has a
  // block per task beyond them (launch_blocks), unless the launch is of its plan's size
  // (task_blocks > 0). Past one round such a plan is either unsplit (two tasks a block, a block
  // per task, the four-block grid: no merge launch to pay for nothing; H100, 0.96-1.00 of the
  // time) or the stream deal's (decode_order.cpp), whose blocks end together and merge in the
  // launch; no other plan of split requests past one round is dealt at its own size
  // (deal_decode_tasks). Captured and compiled runs launch the whole grid (task_blocks 0), so
  // their choice is by shapes alone and a captured graph keeps it valid for later plans.
  const bool plan_sized = task_blocks > 0;
  const auto merges_in_launch = [&](int64_t blocks) {
    return launch_family(p, q.scalar_type(), kv_kind, static_cast<int>(q.size(2)), use_tensor_cores, nullptr,
                         /*grid_only=*/true, blocks) &&
           (plan_sized || groups <= p.num_blocks);
  };
  const int64_t counter_slots = std::min<int64_t>(split_counters.numel(), flashinfer_ops::plan_info::kSplitCounterSlots);
  const bool fused_merge = tfo::kernels::kMergeSplitsInLaunch && counter_slots >= groups &&
                           merges_in_launch(0) && merges_in_launch(max_blocks);
  p.split_counters = fused_merge ? split_counters.data_ptr<int32_t>() : nullptr;
  // A plan-sized launch of one task a block may merge by words (split_merge.h), which follow the
  // counters in split_counters: its partial rows, at most its tasks over the kv heads, must fit
  // them, from a 16-byte boundary (they are stored two at a time; a wrapper's own buffer is).
  // launch_decode_mma takes them for the wide shape's cooperative launch alone.
  if (fused_merge && plan_sized && use_tensor_cores) {
    const int64_t words = ceil_div(task_blocks, p.num_kv_heads) * p.num_qo_heads * q.size(2);
    const int64_t word_slots = (split_counters.numel() - counter_slots) / 2;
    int32_t* const first_word = split_counters.data_ptr<int32_t>() + counter_slots;
    if (words <= word_slots && reinterpret_cast<uintptr_t>(first_word) % 16 == 0) {
      p.merge_words = reinterpret_cast<uint64_t*>(first_word);
    }
  }
  launch(p, q.scalar_type(), kv_kind, static_cast<int>(q.size(2)), static_cast<int>(batch),
         use_tensor_cores, !fused_merge, op, max_blocks, enable_pdl);
}

// A decode configuration named by dtype strings, as plan() queries it: (q dtype, kv kind), or
// nothing where the pair is not served (q not 16-bit, or a 16-bit cache of another type).
std::optional<std::pair<at::ScalarType, KvKind>> decode_types(const std::string& q_dtype,
                                                               const std::string& kv_dtype) {
  const std::pair<const char*, at::ScalarType> names[] = {
      {"float16", at::kHalf},           {"bfloat16", at::kBFloat16},
      {"float8_e4m3fn", at::kFloat8_e4m3fn}, {"float8_e5m2", at::kFloat8_e5m2},
      {"float8_e4m3fnuz", at::kFloat8_e4m3fnuz}, {"float8_e5m2fnuz", at::kFloat8_e5m2fnuz}};
  std::optional<at::ScalarType> q, kv;
  for (const auto& [name, type] : names) {
    if (q_dtype == name) q = type;
    if (kv_dtype == name) kv = type;
  }
  if (!q || !kv || (*q != at::kHalf && *q != at::kBFloat16)) return std::nullopt;
  KvKind kind = KvKind::kSameAsQ;
  if (*kv != *q) {
    if (*kv == at::kHalf || *kv == at::kBFloat16) return std::nullopt;
    kind = (*kv == at::kFloat8_e4m3fn || *kv == at::kFloat8_e4m3fnuz) ? KvKind::kE4M3 : KvKind::kE5M2;
  }
  return std::make_pair(*q, kind);
}

}  // namespace

// The persistent grid run() launches on the current device for a batch decode configuration,
// for plan()'s split policy; 0 when this build holds no such instantiation. No device work.
int64_t decode_grid_blocks(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                           int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores) {
  const auto types = decode_types(q_dtype, kv_dtype);
  if (!types || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0) return 0;
  DecodeParams p{};
  p.group_size = static_cast<int32_t>(num_qo_heads / num_kv_heads);
  const bool served =
      launch_family(p, types->first, types->second, static_cast<int>(head_dim), use_tensor_cores, nullptr, true);
  return served ? p.num_blocks : 0;
}

// The CUDA-core launch of 16-bit caches' 4-row tile at four blocks per multiprocessor: its grid,
// which run() takes where a launch asks for more blocks than the default grid and no more than
// this one (launch_family), for plan()'s deal; likewise the tensor-core kernel's head columns on
// FP8 caches (decode_mma_head_columns_grid). 0 where there is none (the tensor-core kernel on
// 16-bit caches, CUDA cores on FP8 caches, other group tiles, AMD, or no such instantiation). No
// device work.
int64_t decode_four_block_grid(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                               int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores) {
  const auto types = decode_types(q_dtype, kv_dtype);
  if (!types || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0) return 0;
  const int group = static_cast<int>(num_qo_heads / num_kv_heads);
  if (use_tensor_cores) {
    return types->second == KvKind::kSameAsQ
               ? 0
               : decode_mma_head_columns_grid(types->first, types->second, static_cast<int>(head_dim), group);
  }
  if (types->second != KvKind::kSameAsQ || simt_tile(group, types->second) != 4) return 0;
  int64_t grid = 0;
  if constexpr (tfo::gpu::kMinBlocksCapsRegisters) {
    with_decode_config(types->first, static_cast<int>(head_dim), types->second, [&](auto t_tag, auto d_const, auto) {
      using T = typename decltype(t_tag)::type;
      constexpr int D = decltype(d_const)::value;
      grid = persistent_grid<&tfo::kernels::decode_simt_kernel<T, T, D, 4, true>>(tfo::kernels::kDecodeThreads);
    });
  }
  return grid;
}

// The most (item, kv head) tasks a plan may have for run() to launch the tensor-core kernel's
// wide shape (a launch of task_blocks x head_slices blocks, at most the multiprocessors;
// launch_decode_mma), for plan()'s split policy; 0 where that shape is never taken (CUDA cores,
// AMD, a device without its shared memory, or no such instantiation). No device work.
int64_t decode_wide_tasks(const std::string& q_dtype, const std::string& kv_dtype, int64_t head_dim,
                          int64_t num_qo_heads, int64_t num_kv_heads, bool use_tensor_cores) {
  const auto types = decode_types(q_dtype, kv_dtype);
  if (!use_tensor_cores || !types || num_kv_heads <= 0 || num_qo_heads % num_kv_heads != 0) return 0;
  if (!decode_mma_has_wide_shape(types->first, types->second, static_cast<int>(head_dim))) return 0;
  const int64_t head_slices = ceil_div(num_qo_heads / num_kv_heads, kMmaGroupTile);
  return num_multiprocessors() / head_slices;
}

// A profiling build's decode timeline (setup.py's TFO_TIMELINE=1): every later decode launch
// (either kernel family) writes one record per task (csrc/include/timeline_record.h) into the
// device buffer at `records` (tasks x timeline::kWords int64, which the caller keeps alive), up
// to `tasks` tasks; records 0 turns it off. Give each call a buffer of its own: launches that
// share one overwrite each other's records, in an order programmatic dependent launch leaves
// open. benchmarks/decode_timeline.py drives it.
void set_decode_timeline(int64_t records, int64_t tasks) {
#if defined(TFO_TIMELINE)
  TORCH_CHECK(records == 0 || (tasks > 0 && tasks <= std::numeric_limits<int32_t>::max()),
              "set_decode_timeline: tasks must be in [1, 2^31), got ", tasks);
  TORCH_CHECK(records % alignof(int64_t) == 0, "set_decode_timeline: records must be 8-byte aligned");
  timeline_buffer().records = reinterpret_cast<int64_t*>(records);
  timeline_buffer().tasks = records == 0 ? 0 : static_cast<int32_t>(tasks);
#else
  (void)records;
  (void)tasks;
  TORCH_CHECK(false, "set_decode_timeline: this build has no timeline (build with TFO_TIMELINE=1)");
#endif
}

TORCH_LIBRARY_IMPL(flashinfer, CUDA, m) {
  m.impl("single_decode", &single_decode);
  m.impl("batch_decode_paged_run", &batch_decode_paged_run);
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
