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
// grid's time; FP8 1.01-1.03, so the whole grid stays the others' deal). Unequal tasks over more
// than a round keep the whole grid: order_decode_items balances them over it.
//
// four_block_grid (16-bit caches on CUDA cores: the grid of their 4-row tile at four blocks per
// multiprocessor, decode_four_block_grid; 0: none): unsplit equal tasks of more than one round
// and at most three of `grid` take that launch, whose rounds fill better (batch 64 x 8 kv heads:
// one round of 528 blocks, not 1.3 of 396; batch 128: 1.94, not 2.6): H100, d128, fp16 batch
// 64 kv 1k-2k 0.90-0.92 of the time, batch 128 kv 1k-4k 0.97; split plans and more rounds keep
// the default kernel (kv 16k 1.02-1.03, batch 256 0.99-1.00).
void deal_decode_tasks(int32_t* plan, int64_t num_kv_heads, int64_t grid, DecodeDeal deal,
                       int64_t four_block_grid) {
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
  for (int64_t i = 1; i < num_items; ++i) {
    const int32_t* item = view.item(static_cast<int32_t>(i));
    if (item[kKvEnd] - item[kKvBegin] != first[kKvEnd] - first[kKvBegin]) return;
  }
  if (deals_block_per_task(deal, tasks, grid)) {
    if (tasks <= std::numeric_limits<int32_t>::max()) plan[kTaskBlocks] = static_cast<int32_t>(tasks);
    return;
  }
  if (four_block_grid > grid && four_block_grid <= std::numeric_limits<int32_t>::max() &&
      plan[kPartialRows] == 0 && tasks <= 3 * grid) {
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

// The deal plan() takes: a block per task past two rounds where the kernel streams at the full
// bandwidth from two blocks per multiprocessor (plan_host's decode_bandwidth_bound), else the
// whole grid there. TFO_DECODE_DEAL, for measuring (read per plan): "grid" or "tasks" past two
// rounds for every kernel, "tasks-all" a block per task from one round on. task_blocks false:
// the launch runs the whole resident grid whatever the plan (CUDA-graph wrappers, compiled runs),
// which deals as kWholeGridPastTwoRounds whatever the kernel or the switch.
DecodeDeal decode_deal(bool bandwidth_bound, bool task_blocks) {
  if (!task_blocks) return DecodeDeal::kWholeGridPastTwoRounds;
  const char* env = std::getenv("TFO_DECODE_DEAL");
  if (env == nullptr || *env == '\0') {
    return bandwidth_bound ? DecodeDeal::kBlockPerTaskPastTwoRounds : DecodeDeal::kWholeGridPastTwoRounds;
  }
  if (std::strcmp(env, "grid") == 0) return DecodeDeal::kWholeGridPastTwoRounds;
  if (std::strcmp(env, "tasks") == 0) return DecodeDeal::kBlockPerTaskPastTwoRounds;
  if (std::strcmp(env, "tasks-all") == 0) return DecodeDeal::kBlockPerTaskPastOneRound;
  TORCH_CHECK(false, "TFO_DECODE_DEAL must be empty, 'grid', 'tasks' or 'tasks-all', got '", env, "'");
}

}  // namespace cpu
}  // namespace flashinfer_ops
