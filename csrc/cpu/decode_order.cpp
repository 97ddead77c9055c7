// The order of a decode plan's items for the GPU decode kernels' persistent grid. A block takes
// the tasks (item, kv head) in turn: block b runs tasks b, b + grid, b + 2 grid, ..., with task
// = item * num_kv_heads + kv head. In request order that is even only when the requests are
// about as long as each other; a serving batch's are not (kv lengths uniform in 64..8k at batch
// 128, 8 kv heads, 396 blocks: by the cost model the slowest block carries 1.9x the mean).
//
// The items are put in "snake" order: costliest first, in rounds of grid / num_kv_heads items
// (one pass of the grid), every other round reversed, so that a block that drew a long item in
// one round draws a short one in the next (same batches: 1.9x -> 1.1x). The kernels are
// unchanged: the items are independent (each writes its own output or partial rows; a split
// request's partials merge by the request's table, in any order). Cost: unit_cost.h's decode
// task (kv rows + kDecodeTaskCost).
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "../include/plan_info.h"
#include "attention_cpu.h"
#include "unit_cost.h"

namespace flashinfer_ops {
namespace cpu {

void order_decode_items(int32_t* plan, int64_t num_kv_heads, int64_t grid) {
  using namespace plan_info;
  const View view{plan};
  const int64_t num_items = view.num_items();
  // One round or less: every task has a block of its own, whatever the order.
  if (num_kv_heads <= 0 || grid <= 0 || num_items * num_kv_heads <= grid) return;
  std::vector<int64_t> cost(num_items);
  bool uniform = true;
  for (int64_t i = 0; i < num_items; ++i) {
    const int32_t* item = view.item(static_cast<int32_t>(i));
    cost[i] = item[kKvEnd] - item[kKvBegin] + kDecodeTaskCost;
    uniform = uniform && cost[i] == cost[0];
  }
  if (uniform) return;  // the turn is even already; the plan stays as plan_schedule wrote it

  std::vector<int32_t> order(num_items);
  for (int64_t i = 0; i < num_items; ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return cost[a] > cost[b]; });
  const int64_t round = std::max<int64_t>(1, grid / num_kv_heads);
  for (int64_t begin = round; begin < num_items; begin += 2 * round) {
    std::reverse(order.begin() + begin, order.begin() + std::min(begin + round, num_items));
  }
  int32_t* items = const_cast<int32_t*>(view.item(0));
  std::vector<int32_t> copy(items, items + kItemFields * num_items);
  for (int64_t i = 0; i < num_items; ++i) {
    std::memcpy(items + kItemFields * i, copy.data() + kItemFields * order[i], sizeof(int32_t) * kItemFields);
  }
}

// How many blocks the decode launch deals its (item, kv head) tasks over (plan_info
// kTaskBlocks; 0: the whole grid). One round or less: one block per task, so the blocks that
// run are the first the hardware spreads over the multiprocessors rather than part of a full
// grid whose idle blocks would hold places on them. Between one and two rounds of tasks of one
// length: two per block over ceil(tasks / 2) blocks, rather than a full round followed by a
// second round of a few blocks, which streams at a fraction of the bandwidth. H200, d128, 8 kv
// heads, 396 resident blocks, unsplit tasks: batch 32 at kv 4k (256 tasks) 140.7 -> 134.6 us,
// batch 64 at kv 1k (512) 86.7 -> 80.4 us. Past two rounds, with kBlockPerTaskPastTwoRounds: a
// block per task, more than the resident grid, which the hardware starts as places free up, so
// that a multiprocessor that streams faster takes more tasks and the last round is no tail of a
// few blocks (H100, tensor cores on fp16 caches, batch 256 at kv 1k-4k: 0.978-0.982 of the whole
// grid's time; FP8 1.01-1.03, so the whole grid stays the others' deal). The CUDA-core kernel on
// FP8 caches deals a block per task past 15/8 rounds where its tasks are unsplit and short
// (deals_short_tasks_a_block). Unequal tasks over more than a round keep the whole grid:
// order_decode_items balances them over it.
//
// four_block_grid (the grid of a kernel at four blocks per multiprocessor besides the default
// three, decode_four_block_grid: 16-bit caches on CUDA cores, their 4-row tile; FP8 caches on
// tensor cores, their head columns; 0: none): unsplit equal tasks of more than one round and at
// most three of `grid` take that launch, whose rounds fill better (batch 64 x 8 kv heads: one
// round of 528 blocks, not 1.3 of 396; batch 128: 1.94, not 2.6): H100, d128, fp16 CUDA cores
// batch 64 kv 1k-2k 0.90-0.92 of the time, batch 128 kv 1k-4k 0.97; e4m3 tensor cores (its grid
// for every plan, against the default's plans) batch 64 kv 1k-4k 0.956-0.976, batch 128 kv 1k-2k
// 0.969-0.972; split plans and more rounds keep the default kernel (CUDA cores kv 16k 1.02-1.03,
// batch 256 0.99-1.00; tensor cores batch 256 1.02, kv 16k 1.00-1.01). The tensor-core kernel on
// FP8 caches also takes it for up to four of its own rounds that it fills to 15/16, against the
// stream deal that such batches took before: H100, e4m3, batch 256 (2048 tasks, 97% of four
// rounds) kv 1k 0.978 of the time, kv 2k 0.985, kv 4k 0.999; not past 4096 rows a task (kv 16k
// 1.006: there the streams' finer pieces end the launch more evenly).
void deal_decode_tasks(int32_t* plan, int64_t num_kv_heads, int64_t grid, DecodeDeal deal,
                       int64_t four_block_grid, DecodeKernel kernel) {
  using namespace plan_info;
  const View view{plan};
  const int64_t num_items = view.num_items();
  const int64_t tasks = num_items * num_kv_heads;
  plan[kTaskBlocks] = 0;
  if (num_kv_heads <= 0 || grid <= 0 || tasks == 0) return;
  if (tasks <= grid) {
    plan[kTaskBlocks] = static_cast<int32_t>(tasks);
    return;
  }
  const int32_t* first = view.item(0);
  const int64_t task_rows = first[kKvEnd] - first[kKvBegin];
  for (int64_t i = 1; i < num_items; ++i) {
    const int32_t* item = view.item(static_cast<int32_t>(i));
    if (item[kKvEnd] - item[kKvBegin] != task_rows) return;
  }
  const bool unsplit = plan[kPartialRows] == 0;
  if (deals_short_tasks_a_block(deal, tasks, task_rows, unsplit, grid)) {
    if (tasks <= std::numeric_limits<int32_t>::max()) plan[kTaskBlocks] = static_cast<int32_t>(tasks);
    return;
  }
  if (unsplit && four_block_grid <= std::numeric_limits<int32_t>::max() &&
      deals_four_block_grid(deal, kernel, tasks, task_rows, grid, four_block_grid)) {
    plan[kTaskBlocks] = static_cast<int32_t>(four_block_grid);
    return;
  }
  if (tasks <= 2 * grid) plan[kTaskBlocks] = static_cast<int32_t>((tasks + 1) / 2);
}

bool deals_block_per_task(DecodeDeal deal, int64_t tasks, int64_t grid) {
  if (tasks <= grid) return true;
  if (deal == DecodeDeal::kBlockPerTaskPastOneRound) return true;
  return deal == DecodeDeal::kBlockPerTaskPastTwoRounds && tasks > 2 * grid;
}

// Where a block per task was measured faster on the CUDA-core kernel with FP8 caches
// (kBlockPerShortTask): unsplit tasks of at most kShortTaskRows rows, in more than 15/8
// and at most kShortTaskRounds rounds of the grid. H100, d128, 8 kv heads, its 528-block grid,
// e4m3 batch 128 / 192 / 256 (1.94 / 2.91 / 3.88 rounds) at kv 1k-4k: 0.98 / 0.96 / 0.95 of the
// time of the two-per-block and whole-grid deals (batch 64 is one round either way). Below 15/8
// rounds, not measured, the two-per-block deal stays: just past one round a block per task would
// leave the few tasks past the first round to stream alone at the launch's end.
constexpr int64_t kShortTaskRows = 4096;
constexpr int64_t kShortTaskMinEighthRounds = 15;
constexpr int64_t kShortTaskRounds = 4;

bool deals_short_tasks_a_block(DecodeDeal deal, int64_t tasks, int64_t task_rows, bool unsplit, int64_t grid) {
  if (deals_block_per_task(deal, tasks, grid)) return true;
  return deal == DecodeDeal::kBlockPerShortTask && unsplit && task_rows <= kShortTaskRows &&
         8 * tasks > kShortTaskMinEighthRounds * grid && tasks <= kShortTaskRounds * grid;
}

bool fills_four_block_rounds(int64_t tasks, int64_t four_block_grid) {
  if (four_block_grid <= 0 || tasks <= 0) return false;
  return tasks * 16 >= 15 * four_block_grid * ceil_div(tasks, four_block_grid);
}

// The most rounds of its own grid, and the most kv rows a task, for which the four-block launch
// of the tensor-core kernel on FP8 caches was measured faster (or level) where it fills its
// rounds (deal_decode_tasks): batch 256 x 8 kv heads, kv 1k-4k (three full rounds, batch 186-198,
// not measured).
constexpr int64_t kFp8FourBlockFilledRounds = 4;
constexpr int64_t kFp8FourBlockFilledMaxRows = 4096;

bool deals_four_block_grid(DecodeDeal deal, DecodeKernel kernel, int64_t tasks, int64_t task_rows, int64_t grid,
                           int64_t four_block_grid) {
  if (four_block_grid <= grid || tasks <= grid || deals_block_per_task(deal, tasks, grid)) return false;
  if (tasks <= 3 * grid) return true;
  return kernel == DecodeKernel::kTensorCoresFp8 && tasks <= kFp8FourBlockFilledRounds * four_block_grid &&
         task_rows <= kFp8FourBlockFilledMaxRows && fills_four_block_rounds(tasks, four_block_grid);
}

// The deal plan() takes: a block per task past two rounds where the kernel streams at the full
// bandwidth from two blocks per multiprocessor (bandwidth_bound, attention_cpu.h); for the
// CUDA-core kernel on FP8 caches a block per short unsplit task past 15/8 rounds
// (deals_short_tasks_a_block), where the whole grid's blocks, each on the multiprocessor it
// started on, end as unevenly as their multiprocessors' paces; else the whole grid past two
// rounds. TFO_DECODE_DEAL, for measuring (read per plan): "grid" or "tasks" past two
// rounds for every kernel, "tasks-all" a block per task from one round on. task_blocks false:
// the launch runs the whole resident grid whatever the plan (CUDA-graph wrappers, compiled runs),
// which deals as kWholeGridPastTwoRounds whatever the kernel or the switch.
DecodeDeal decode_deal(DecodeKernel kernel, bool task_blocks) {
  if (!task_blocks) return DecodeDeal::kWholeGridPastTwoRounds;
  const char* env = std::getenv("TFO_DECODE_DEAL");
  if (env == nullptr || *env == '\0') {
    if (bandwidth_bound(kernel)) return DecodeDeal::kBlockPerTaskPastTwoRounds;
    if (kernel == DecodeKernel::kCudaCoresFp8) return DecodeDeal::kBlockPerShortTask;
    return DecodeDeal::kWholeGridPastTwoRounds;
  }
  if (std::strcmp(env, "grid") == 0) return DecodeDeal::kWholeGridPastTwoRounds;
  if (std::strcmp(env, "tasks") == 0) return DecodeDeal::kBlockPerTaskPastTwoRounds;
  if (std::strcmp(env, "tasks-all") == 0) return DecodeDeal::kBlockPerTaskPastOneRound;
  TORCH_CHECK(false, "TFO_DECODE_DEAL must be empty, 'grid', 'tasks' or 'tasks-all', got '", env, "'");
}

bool decode_stream_deal(bool kernel_gains) {
  const char* env = std::getenv("TFO_DECODE_STREAM");
  if (env == nullptr || *env == '\0') return kernel_gains;
  if (std::strcmp(env, "0") == 0) return false;
  TORCH_CHECK(std::strcmp(env, "1") == 0, "TFO_DECODE_STREAM must be empty, '0' or '1', got '", env, "'");
  return true;
}

// A stream deal of an unsplit decode plan over more than one round: the rows of all requests,
// laid end to end, cut into one stream per group of num_kv_heads blocks (a block per kv head),
// each stream about the same number of rows, its cuts on 64-row boundaries inside a request. A
// stream's pieces (a request's rows within it) are its blocks' tasks in order, so every block
// moves about the same bytes and the blocks' task boundaries fall at different times instead of
// at once (an unsplit plan dealt over the grid starts and ends every block's tasks together, all
// of them fetching a first tile and combining their waves at the same time, and past one round
// leaves its last round part-filled; measured 2-5% faster where plan_host.cpp's streams_pay takes it).
// A request cut by streams is split: its pieces merge as any split request's. The items go in
// rounds (item k * groups + g: stream g's k-th piece), which the launch's strided deal of
// groups * num_kv_heads blocks gives to stream g's blocks; streams of the most pieces first, so
// that the last round is a prefix. Returns false (the plan untouched) where that layout does
// not hold: a stream with two pieces fewer than another, or a plan that would not fit.
bool stream_decode_items(int32_t* plan, int64_t plan_size, int64_t num_kv_heads, int64_t grid) {
  using namespace plan_info;
  const View view{plan};
  const int64_t batch = view.num_requests(), num_items = view.num_items();
  const int64_t groups = num_kv_heads > 0 ? grid / num_kv_heads : 0;
  if (groups < 2 || batch <= groups || num_items != batch || plan[kNumLists] != 0) return false;
  constexpr int64_t kCut = 64;  // cuts on the narrow tile's boundaries
  std::vector<int64_t> begin(batch + 1, 0), page_base(batch);
  for (int64_t r = 0; r < batch; ++r) {
    const int32_t* item = view.item(static_cast<int32_t>(r));
    if (item[kRequest] != r || item[kKvBegin] != 0 || item[kPartialRow] != -1 || item[kKvLen] < kCut) return false;
    begin[r + 1] = begin[r] + item[kKvLen];
    page_base[r] = item[kPageBase];
  }
  const int64_t rows = begin[batch];
  // Stream g covers [cut[g], cut[g + 1]) of the rows laid end to end.
  std::vector<int64_t> cut(groups + 1, rows);
  cut[0] = 0;
  int64_t r = 0;
  for (int64_t g = 1; g < groups; ++g) {
    const int64_t target = rows * g / groups;
    while (r + 1 < batch && begin[r + 1] <= target) ++r;
    // The nearest cut to the target in request r: a multiple of kCut that leaves at least kCut
    // rows after it (no sliver of a piece), or the request's end.
    const int64_t len = begin[r + 1] - begin[r], off = target - begin[r];
    const int64_t last = (len - kCut) / kCut * kCut;
    int64_t at = (off + kCut / 2) / kCut * kCut;
    if (at > last) at = off - last < len - off ? last : len;
    cut[g] = std::max(cut[g - 1], begin[r] + at);
    if (cut[g] == cut[g - 1]) return false;  // an empty stream
  }
  // Pieces: (stream, request, kv begin, kv end), in row order.
  struct Piece { int64_t stream, request, kv_begin, kv_end; };
  std::vector<Piece> pieces;
  std::vector<int64_t> count(groups, 0), splits(batch, 0);
  r = 0;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t at = cut[g]; at < cut[g + 1];) {
      while (r + 1 < batch && begin[r + 1] <= at) ++r;
      const int64_t end = std::min(cut[g + 1], begin[r + 1]);
      pieces.push_back({g, r, at - begin[r], end - begin[r]});
      ++count[g];
      ++splits[r];
      at = end;
    }
  }
  const int64_t most = *std::max_element(count.begin(), count.end());
  for (int64_t c : count) {
    if (c < most - 1) return false;
  }
  const int64_t new_items = static_cast<int64_t>(pieces.size());
  if (size_for(new_items, batch) > plan_size) return false;
  // Streams of the most pieces take the first ranks: their last pieces make the last round.
  std::vector<int64_t> rank(groups);
  int64_t next = 0;
  for (int64_t g = 0; g < groups; ++g) if (count[g] == most) rank[g] = next++;
  for (int64_t g = 0; g < groups; ++g) if (count[g] != most) rank[g] = next++;
  std::vector<int64_t> partial_base(batch, -1), seen(batch, 0);
  int64_t partial_rows = 0;
  for (int64_t q = 0; q < batch; ++q) {
    if (splits[q] > 1) {
      partial_base[q] = partial_rows;
      partial_rows += splits[q];
    }
  }
  int32_t* items = plan + kHeaderSize;
  std::vector<int64_t> kth(groups, 0);
  for (const Piece& piece : pieces) {
    int32_t* item = items + kItemFields * (kth[piece.stream]++ * groups + rank[piece.stream]);
    const int64_t q = piece.request;
    item[kRequest] = static_cast<int32_t>(q);
    item[kQBegin] = 0;
    item[kQEnd] = 1;
    item[kKvBegin] = static_cast<int32_t>(piece.kv_begin);
    item[kKvEnd] = static_cast<int32_t>(piece.kv_end);
    item[kPartialRow] = static_cast<int32_t>(splits[q] > 1 ? partial_base[q] + seen[q]++ : -1);
    item[kKvLen] = static_cast<int32_t>(begin[q + 1] - begin[q]);
    item[kPageBase] = static_cast<int32_t>(page_base[q]);
  }
  int32_t* requests = items + kItemFields * new_items;
  for (int64_t q = 0; q < batch; ++q) {
    requests[kRequestFields * q + kPartialBase] = static_cast<int32_t>(partial_base[q]);
    requests[kRequestFields * q + kNumSplits] = static_cast<int32_t>(std::max<int64_t>(splits[q], 1));
  }
  plan[kNumItems] = static_cast<int32_t>(new_items);
  plan[kPartialRows] = static_cast<int32_t>(partial_rows);
  plan[kTaskBlocks] = static_cast<int32_t>(groups * num_kv_heads);
  return true;
}

}  // namespace cpu
}  // namespace flashinfer_ops
