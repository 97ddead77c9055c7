// Layout of the int32 schedule ("plan_info") that plan_batch writes and the batch run operators
// read. Torch-free: the CPU kernels and the GPU kernels share it.
//
//   [0, kHeaderSize)                         header, see Header
//   [kHeaderSize, + kItemFields*num_items)   work items, one per (request, q tile, kv chunk)
//   [..., + kRequestFields*batch)            per request: partial_base, num_splits
//   [..., + num_lists + 1)                   work lists (GPU prefill): offsets of each list
//   [..., + num_kv_heads*num_items)          their entries, item * num_kv_heads + kv head
//
// Everything a run reads lies in the prefix of size_for(num_items, batch, num_lists,
// num_kv_heads), so a plan is copied to the device by its prefix while the buffer itself
// keeps a fixed size. The items come first, at a fixed offset: a decode block reads its first
// item together with the header (the item's place does not wait for the header's counts), and
// each item carries what the block needs of its request before the launch before it has ended
// (kKvLen, kPageBase).
//
// A work item covers query rows [q_begin, q_end) of one request (row indices local to
// the request) against its kv positions [kv_begin, kv_end), for every kv head. When a
// request is split over several kv chunks, each item writes a float32 partial result at
// partial rows [partial_row, partial_row + q_end - q_begin) and a merge step combines the
// num_splits partial results of each row; otherwise partial_row is -1 and the item
// writes the output directly.
//
// Work lists (num_lists > 0) say which block of a persistent grid of num_lists blocks runs
// which (item, kv head): work_lists.cpp balances their costs (the causal items of one request
// differ in length by up to the request's kv length). Without them a grid takes the (item,
// kv head) pairs in turn. Lists only order the work: every pair is in exactly one list, so a
// grid of any size that runs lists b, b + grid, ... computes the same result.
#pragma once
#include <cstdint>

namespace flashinfer_ops {
namespace plan_info {

constexpr int kHeaderSize = 8;
constexpr int kItemFields = 8;
constexpr int kRequestFields = 2;

// Partial rows a wave of the split merge loads before it uses the first (split_merge.h): after a
// split request's last task the merge takes one L2 round trip per this many splits, which the
// decode split model charges (plan_host.cpp, decode_merge_cost).
constexpr int kMergeRowsInFlight = 8;

// The wrapper's split_counters tensor (int32, zero between runs): its first kSplitCounterSlots
// entries count the arrivals of the (request, kv head, head slice) groups a launch merges; any
// entries past them (an even count, 8-byte aligned) are the merge words of a launch that merges
// by words (split_merge.h), two int32 a word.
constexpr int64_t kSplitCounterSlots = int64_t{1} << 16;

enum Header : int {
  kNumItems = 0,
  kNumRequests = 1,
  kItemCapacity = 2,  // items the buffer could hold for this batch
  kNumLists = 3,  // work lists after the items (0: none)
  kPartialRows = 4,
  kQTileRows = 5,
  kKvChunkSize = 6,
  kTaskBlocks = 7,  // GPU decode: the blocks its (item, kv head) tasks are dealt over (0: the
                    // resident grid; more than it: a block per task)
};

enum ItemField : int {
  kRequest = 0,
  kQBegin = 1,
  kQEnd = 2,
  kKvBegin = 3,
  kKvEnd = 4,
  kPartialRow = 5,
  // The item's request's kv length and, for a paged cache, its first page's place in kv_indices
  // (kv_indptr[request]; -1 where the plan was made without the page table, so that a kernel
  // reads kv_indptr itself). The tensor-core decode kernel reads both with the item, before the
  // programmatic-launch wait, so that only its page ids and K/V wait for the launch before.
  kKvLen = 6,
  kPageBase = 7,
};

enum RequestField : int {
  kPartialBase = 0,  // first partial row of the request, -1 when not split
  kNumSplits = 1,
};

inline constexpr int64_t size_for(int64_t item_capacity, int64_t request_capacity, int64_t num_lists = 0,
                                   int64_t num_kv_heads = 0) {
  return kHeaderSize + kItemFields * item_capacity + kRequestFields * request_capacity +
         (num_lists > 0 ? num_lists + 1 + num_kv_heads * item_capacity : 0);
}

// The item slots at their fixed offsets in a buffer of plan_size int32: a kernel that reads an
// item before it knows the item count clamps the index to these, so the read stays inside the
// buffer (its content past num_items is then ignored).
inline constexpr int64_t item_slots(int64_t plan_size) {
  return plan_size > kHeaderSize ? (plan_size - kHeaderSize) / kItemFields : 0;
}

struct View {
  const int32_t* data;
  int32_t num_items() const { return data[kNumItems]; }
  int32_t num_requests() const { return data[kNumRequests]; }
  const int32_t* item(int32_t i) const { return data + kHeaderSize + kItemFields * i; }
  const int32_t* request(int32_t r) const {
    return data + kHeaderSize + kItemFields * data[kNumItems] + kRequestFields * r;
  }
  // Offsets of the work lists (num_lists + 1 entries), then their entries.
  const int32_t* list_offsets() const { return request(data[kNumRequests]); }
};

}  // namespace plan_info
}  // namespace flashinfer_ops
