// CPU attention: a blockwise FlashAttention-style loop with an fp32 online softmax
// (base 2), shared by every attention operator on the CPU dispatch key.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace flashinfer_ops {
namespace cpu {

// Where one request's keys (or values) live. Offsets are in elements.
struct KvAddressing {
  const void* base = nullptr;
  int64_t stride_page = 0;   // paged caches: distance between pages
  int64_t stride_token = 0;  // distance between consecutive tokens (within a page)
  int64_t stride_head = 0;
  int64_t page_size = 0;     // 0: tokens are contiguous (single request or ragged batch)
};

struct AttentionProblem {
  // Query and output: [qo_tokens, heads, head_dim] with arbitrary token/head strides.
  const void* q = nullptr;
  int64_t q_stride_token = 0, q_stride_head = 0;
  void* o = nullptr;
  int64_t o_stride_token = 0, o_stride_head = 0;
  float* lse = nullptr;          // [qo_tokens, num_qo_heads] contiguous, optional
  float* partial_o = nullptr;    // [partial_rows, num_qo_heads, head_dim]
  float* partial_lse = nullptr;  // [partial_rows, num_qo_heads]
  at::ScalarType q_dtype = at::kHalf, kv_dtype = at::kHalf, o_dtype = at::kHalf;

  KvAddressing k, v;
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0;

  // Batch description (device-side arrays; on the CPU, host pointers).
  const int32_t* qo_indptr = nullptr;         // [batch + 1]
  const int32_t* kv_indptr = nullptr;         // ragged: token offsets; paged: page offsets
  const int32_t* kv_indices = nullptr;        // paged only
  const int32_t* kv_last_page_len = nullptr;  // paged only
  const uint8_t* packed_custom_mask = nullptr;
  const int32_t* mask_indptr = nullptr;       // byte offset of each request's mask

  bool causal = false;
  int window_left = -1;
  float sm_scale = 1.f, logits_soft_cap = 0.f, k_scale = 1.f, v_scale = 1.f;
};

// Runs the schedule in plan_info (see plan_info.h) and merges split requests.
void run_attention(const AttentionProblem& problem, const int32_t* plan_info);

// Host planner shared by the plan_batch operator and the single-request operators.
// Returns the number of work items written; throws when the capacity is too small.
void plan_schedule(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch,
                   int64_t q_tile_rows, int64_t kv_chunk_size, int32_t* plan_info,
                   int64_t plan_info_size);

// Appends to a plan written by plan_schedule the work lists of a persistent GPU grid of
// num_lists blocks (work_lists.cpp), unless the plan's pairs cost the same or the lists would
// not fit in plan_size. Returns the plan's size in int32 (the prefix a run reads).
int64_t plan_work_lists(int32_t* plan_info, int64_t plan_size, const int32_t* qo_indptr, const int32_t* kv_lens,
                        int64_t num_kv_heads, int64_t num_lists, bool causal, int64_t window_left);

// Reorders the items of a decode plan written by plan_schedule for a persistent GPU grid of
// `grid` blocks that takes its tasks (item, kv head) in turn (decode_order.cpp): costlier items
// first, alternate rounds reversed, so that uneven batches load the blocks evenly. Plans whose
// items cost the same, or whose tasks fit one round, keep their order.
void order_decode_items(int32_t* plan_info, int64_t num_kv_heads, int64_t grid);
// An unsplit decode plan of more than one round as streams of about equal rows, one per group of
// num_kv_heads blocks (decode_order.cpp); false where it leaves the plan as it was.
bool stream_decode_items(int32_t* plan_info, int64_t plan_size, int64_t num_kv_heads, int64_t grid);
// Whether plan() takes the stream deal where it applies: kernel_gains (the kernels it was
// measured faster for, plan_host.cpp), unless the measuring switch TFO_DECODE_STREAM (read per
// plan) says "0" (never) or "1" (for every kernel).
bool decode_stream_deal(bool kernel_gains);
// The decode kernel a GPU plan is for, where plan()'s split and deal depend on which (the bandwidth
// bound below, plan_host.cpp's streams_pay). The values cross from Python (_plan.py's
// decode_kernel). The rules are NVIDIA measurements: other platforms' kernels (AMD) pass
// kNotMeasured and keep the default split and deal.
enum class DecodeKernel : int64_t {
  kNotMeasured = 0,
  kCudaCores16Bit = 1,
  kCudaCoresFp8 = 2,
  kTensorCores16Bit = 3,
  kTensorCoresFp8 = 4,
};
// Whether `kernel` streams at the full memory bandwidth from two blocks per multiprocessor
// (plan_host.cpp's kDecodeBlocksPerSm), so that plan() need not split requests to fill the rest of
// its grid: measured (H200, H100) for the tensor-core kernel on 16-bit caches only; its FP8 and
// the CUDA-core kernels need more blocks.
inline bool bandwidth_bound(DecodeKernel kernel) { return kernel == DecodeKernel::kTensorCores16Bit; }
// a / b rounded up, for the planner's counts (non-negative a, positive b).
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// How deal_decode_tasks sizes launches of more than one round of equal tasks, and which plan()
// takes for a kernel (decode_order.cpp). kBlockPerShortTask: a block per task for
// short unsplit tasks of more than 15/8 rounds and at most four (deals_short_tasks_a_block), else
// as kWholeGridPastTwoRounds.
enum class DecodeDeal {
  kWholeGridPastTwoRounds,
  kBlockPerTaskPastTwoRounds,
  kBlockPerTaskPastOneRound,
  kBlockPerShortTask,
};
DecodeDeal decode_deal(DecodeKernel kernel, bool task_blocks);
// Whether `deal` gives each of `tasks` equal tasks a block of its own on a grid of `grid`.
bool deals_block_per_task(DecodeDeal deal, int64_t tasks, int64_t grid);
// Whether `deal` gives each of `tasks` equal tasks of `task_rows` kv rows a block of its own on
// a grid of `grid`, the plan unsplit (`unsplit`) or not: deals_block_per_task, and
// kBlockPerShortTask's short unsplit tasks.
bool deals_short_tasks_a_block(DecodeDeal deal, int64_t tasks, int64_t task_rows, bool unsplit, int64_t grid);
// Whether `deal` gives `tasks` equal unsplit tasks of `kernel`, `task_rows` kv rows each, the
// four-block launch (four_block_grid blocks, 0: none): more than one round of `grid` and at most
// three, not dealt a block each; for the tensor-core kernel on FP8 caches also up to four rounds of
// the four-block grid that fill it (fills_four_block_rounds), of tasks of at most 4096 rows.
bool deals_four_block_grid(DecodeDeal deal, DecodeKernel kernel, int64_t tasks, int64_t task_rows, int64_t grid,
                           int64_t four_block_grid);
// Whether `tasks` fill each round of a `four_block_grid`-block launch to at least 15/16.
bool fills_four_block_rounds(int64_t tasks, int64_t four_block_grid);
void deal_decode_tasks(int32_t* plan_info, int64_t num_kv_heads, int64_t grid, DecodeDeal deal,
                       int64_t four_block_grid = 0, DecodeKernel kernel = DecodeKernel::kNotMeasured);

// Plan size (in int32) that plan_schedule needs for this batch.
int64_t plan_size_for(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch,
                      int64_t q_tile_rows, int64_t kv_chunk_size);

}  // namespace cpu
}  // namespace flashinfer_ops
