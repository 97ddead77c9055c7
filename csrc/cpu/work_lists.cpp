// Work lists for the GPU prefill kernels' persistent grid (plan_info.h): which block runs which
// (item, kv head). A block that takes every grid-th pair is only balanced when the pairs cost
// the same; causal items do not: a request's last q tile streams its whole kv range, its first
// one tile. With 16 requests of 1k tokens, 8 kv heads and 264 blocks, block b takes q tiles
// b / 8 .. b / 8 + 15 of successive requests, and the slowest block has ~1.45x the mean work.
//
// The lists are built by list scheduling: pairs in request order (so that the blocks work on
// neighbouring requests at any time and their K/V stays in the L2 cache), each request's items
// longest first (so that the schedule ends on short ones), each pair to the least loaded block.
// Its cost: unit_cost.h's (the kv rows the kernel streams for it, after the causal and window
// bounds, plus a fixed cost for the q tile's load and the output's store).
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../include/plan_info.h"
#include "attention_cpu.h"
#include "unit_cost.h"

namespace flashinfer_ops {
namespace cpu {
namespace {

// The blocks by load, to pick the least loaded one in O(1): a bucket queue over loads in
// buckets of kBucketRows rows (so the pick is least loaded to within one bucket). Every load
// lies within [min load, min load + max_cost] (a block is only given work while least loaded),
// so a ring of max_cost / kBucketRows + 2 buckets holds them, and the lowest non-empty bucket
// only moves up.
constexpr int64_t kBucketRows = 32;

class LeastLoaded {
 public:
  LeastLoaded(int64_t blocks, int64_t max_cost)
      : ring_(max_cost / kBucketRows + 2, -1), next_(blocks), load_(blocks, 0) {
    for (int64_t b = blocks - 1; b >= 0; --b) push(static_cast<int32_t>(b));  // block 0 on top
  }
  // Takes the least loaded block (to within a bucket) and gives it cost more rows of work.
  int32_t take(int64_t cost) {
    int32_t* head = &ring_[lowest_ % ring_.size()];
    while (*head < 0) head = &ring_[++lowest_ % ring_.size()];
    const int32_t b = *head;
    *head = next_[b];
    load_[b] += cost;
    push(b);
    return b;
  }

 private:
  void push(int32_t b) {
    int32_t& head = ring_[(load_[b] / kBucketRows) % ring_.size()];
    next_[b] = head;
    head = b;
  }
  std::vector<int32_t> ring_;  // per bucket: its first block, -1 when empty
  std::vector<int32_t> next_;  // per block: the next block of its bucket
  std::vector<int64_t> load_;
  int64_t lowest_ = 0;  // the lowest bucket that may be non-empty
};

}  // namespace

int64_t plan_work_lists(int32_t* plan, int64_t plan_size, const int32_t* qo_indptr, const int32_t* kv_lens,
                        int64_t num_kv_heads, int64_t num_lists, bool causal, int64_t window_left) {
  using namespace plan_info;
  const View view{plan};
  const int64_t batch = view.num_requests(), num_items = view.num_items();
  plan[kNumLists] = 0;
  const int64_t without = size_for(num_items, batch);
  if (num_lists <= 0 || num_kv_heads <= 0 || num_items == 0 ||
      size_for(num_items, batch, num_lists, num_kv_heads) > plan_size) {
    return without;
  }
  // Item costs; pairs that all cost the same are balanced by the grid's own rotation.
  std::vector<int64_t> cost(num_items);
  bool uniform = true;
  int64_t max_cost = 0;
  for (int64_t i = 0; i < num_items; ++i) {
    const int32_t* item = view.item(static_cast<int32_t>(i));
    const int64_t r = item[kRequest];
    cost[i] = visible_kv_rows(item[kQBegin], item[kQEnd], item[kKvBegin], item[kKvEnd], qo_indptr[r + 1] - qo_indptr[r],
                              kv_lens[r], causal, window_left) +
              kUnitFixedRows;
    uniform = uniform && cost[i] == cost[0];
    max_cost = std::max(max_cost, cost[i]);
  }
  if (uniform) return without;

  // Items in request order (plan_schedule writes each request's items together), each
  // request's longest first; each of an item's kv heads to the least loaded block.
  std::vector<int32_t> order(num_items);
  for (int64_t i = 0; i < num_items; ++i) order[i] = static_cast<int32_t>(i);
  for (int64_t begin = 0; begin < num_items;) {
    const int32_t request = view.item(order[begin])[kRequest];
    int64_t end = begin + 1;
    while (end < num_items && view.item(order[end])[kRequest] == request) ++end;
    std::stable_sort(order.begin() + begin, order.begin() + end,
                     [&](int32_t a, int32_t b) { return cost[a] > cost[b]; });
    begin = end;
  }
  const int64_t num_entries = num_items * num_kv_heads;
  std::vector<int32_t> block_of(num_entries);  // in assignment order
  std::vector<int32_t> count(num_lists, 0);
  LeastLoaded blocks(num_lists, max_cost);
  int64_t n = 0;
  for (const int32_t i : order) {
    for (int64_t h = 0; h < num_kv_heads; ++h, ++n) {
      const int32_t b = blocks.take(cost[i]);
      block_of[n] = b;
      ++count[b];
    }
  }
  // Offsets, then each list's entries in assignment order (a block runs them request by
  // request, each request's longest first).
  int32_t* offsets = plan + without;
  int32_t* entries = offsets + num_lists + 1;
  offsets[0] = 0;
  for (int64_t b = 0; b < num_lists; ++b) offsets[b + 1] = offsets[b] + count[b];
  std::vector<int32_t> fill(offsets, offsets + num_lists);
  n = 0;
  for (const int32_t i : order) {
    for (int64_t h = 0; h < num_kv_heads; ++h, ++n) {
      entries[fill[block_of[n]]++] = static_cast<int32_t>(i * num_kv_heads + h);
    }
  }
  plan[kNumLists] = static_cast<int32_t>(num_lists);
  return size_for(num_items, batch, num_lists, num_kv_heads);
}

}  // namespace cpu
}  // namespace flashinfer_ops
