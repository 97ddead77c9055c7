// The host planner: partitions a batch into work items (request, q tile, kv chunk) and
// writes them into the int32 plan_info layout of plan_info.h. The policy (tile rows, kv
// chunk size) is chosen by the caller; this file is the mechanism.
#include <torch/library.h>

#include <algorithm>

#include "../include/plan_info.h"
#include "attention_cpu.h"

namespace flashinfer_ops {
namespace cpu {
namespace {

int64_t num_splits(int64_t kv_len, int64_t kv_chunk_size) {
  if (kv_chunk_size <= 0 || kv_len <= kv_chunk_size) return 1;
  return ceil_div(kv_len, kv_chunk_size);
}

int64_t num_q_tiles(int64_t qo_len, int64_t q_tile_rows) {
  return std::max<int64_t>(1, ceil_div(qo_len, q_tile_rows));
}

}  // namespace

namespace {

int64_t count_items(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch, int64_t q_tile_rows,
                    int64_t kv_chunk_size) {
  int64_t items = 0;
  for (int64_t r = 0; r < batch; ++r) {
    items += num_q_tiles(qo_indptr[r + 1] - qo_indptr[r], q_tile_rows) *
             num_splits(kv_lens[r], kv_chunk_size);
  }
  return items;
}

}  // namespace

int64_t plan_size_for(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch,
                      int64_t q_tile_rows, int64_t kv_chunk_size) {
  return plan_info::size_for(count_items(qo_indptr, kv_lens, batch, q_tile_rows, kv_chunk_size), batch);
}

void plan_schedule(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch,
                   int64_t q_tile_rows, int64_t kv_chunk_size, int32_t* out,
                   int64_t out_size) {
  using namespace plan_info;
  TORCH_CHECK(q_tile_rows > 0, "plan_batch: q_tile_rows must be positive, got ", q_tile_rows);
  TORCH_CHECK(out_size >= kHeaderSize, "plan_batch: plan_info too small");
  // Items first, then the requests (plan_info.h).
  const int64_t item_capacity = (out_size - kHeaderSize - kRequestFields * batch) / kItemFields;
  const int64_t num_items = count_items(qo_indptr, kv_lens, batch, q_tile_rows, kv_chunk_size);
  const int64_t needed = size_for(num_items, batch);
  TORCH_CHECK_VALUE(needed <= out_size, "plan_batch: plan_info (the plan region of "
                    "float_workspace_buffer) holds ", out_size, " int32 but this batch needs ", needed,
                    "; give a larger float_workspace_buffer");

  int32_t* items = out + kHeaderSize;
  int32_t* requests = items + kItemFields * num_items;
  int64_t n = 0, partial_rows = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t qo_len = qo_indptr[r + 1] - qo_indptr[r];
    TORCH_CHECK(qo_len >= 0, "plan_batch: qo_indptr must be non-decreasing (request ", r, ")");
    TORCH_CHECK(kv_lens[r] >= 0, "plan_batch: negative kv length for request ", r);
    const int64_t splits = num_splits(kv_lens[r], kv_chunk_size);
    const int64_t base = splits > 1 ? partial_rows : -1;
    requests[kRequestFields * r + kPartialBase] = static_cast<int32_t>(base);
    requests[kRequestFields * r + kNumSplits] = static_cast<int32_t>(splits);
    const int64_t chunk = splits > 1 ? kv_chunk_size : std::max<int64_t>(kv_lens[r], 1);
    for (int64_t s = 0; s < splits; ++s) {
      for (int64_t q0 = 0; q0 < std::max<int64_t>(qo_len, 1); q0 += q_tile_rows) {
        int32_t* item = items + kItemFields * n++;
        item[kRequest] = static_cast<int32_t>(r);
        item[kQBegin] = static_cast<int32_t>(std::min(q0, qo_len));
        item[kQEnd] = static_cast<int32_t>(std::min(q0 + q_tile_rows, qo_len));
        item[kKvBegin] = static_cast<int32_t>(s * chunk);
        item[kKvEnd] = static_cast<int32_t>(std::min<int64_t>((s + 1) * chunk, kv_lens[r]));
        item[kPartialRow] = static_cast<int32_t>(splits > 1 ? base + s * qo_len + q0 : -1);
        item[kKvLen] = kv_lens[r];
        item[kPageBase] = -1;  // plan_host.cpp's caller may give the page table
      }
    }
    if (splits > 1) partial_rows += splits * qo_len;
  }
  out[kNumItems] = static_cast<int32_t>(n);
  out[kNumRequests] = static_cast<int32_t>(batch);
  out[kItemCapacity] = static_cast<int32_t>(item_capacity);
  out[kNumLists] = 0;  // work_lists.cpp may add lists
  out[kPartialRows] = static_cast<int32_t>(partial_rows);
  out[kQTileRows] = static_cast<int32_t>(q_tile_rows);
  out[kKvChunkSize] = static_cast<int32_t>(kv_chunk_size);
  out[kTaskBlocks] = 0;  // decode_order.cpp's deal_decode_tasks may set it
}

namespace {

void plan_batch(const at::Tensor& qo_indptr, const at::Tensor& kv_lens, at::Tensor& plan_info,
                int64_t q_tile_rows, int64_t kv_chunk_size) {
  for (const at::Tensor* t : {&qo_indptr, &kv_lens, static_cast<const at::Tensor*>(&plan_info)}) {
    TORCH_CHECK(t->dtype() == at::kInt && t->is_contiguous() && t->dim() == 1,
                "plan_batch: qo_indptr, kv_lens and plan_info must be contiguous 1-D int32");
  }
  const int64_t batch = kv_lens.numel();
  TORCH_CHECK(qo_indptr.numel() == batch + 1, "plan_batch: qo_indptr must have batch + 1 = ",
              batch + 1, " entries, got ", qo_indptr.numel());
  plan_schedule(qo_indptr.data_ptr<int32_t>(), kv_lens.data_ptr<int32_t>(), batch, q_tile_rows,
                kv_chunk_size, plan_info.data_ptr<int32_t>(), plan_info.numel());
}

}  // namespace

TORCH_LIBRARY_IMPL(flashinfer, CPU, m) { m.impl("plan_batch", &plan_batch); }

}  // namespace cpu
}  // namespace flashinfer_ops
