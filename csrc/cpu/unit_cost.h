// The cost models of GPU work, in kv rows streamed. Prefill units, shared by the kv split
// policy (plan_host.cpp) and the work lists (work_lists.cpp): a unit (one q tile of one kv
// head) streams the kv rows that some query row of the tile may see, plus a fixed cost for
// loading the tile and storing its output. Decode tasks (one request's kv range of one kv
// head), shared by the split policy and the decode item order (decode_order.cpp): the rows of
// the range plus a fixed cost.
#pragma once
#include <algorithm>
#include <cstdint>

namespace flashinfer_ops {
namespace cpu {

// A decode task's fixed cost (its start, first tile, merge) in kv rows streamed: fitted to
// H200 timings of one-round schedules (batch 16, kv 1k and 4k: 30 and 79 us per round of
// 384-row and 1408-row tasks, ~0.048 us per row plus ~12 us).
constexpr int64_t kDecodeTaskCost = 256;

// A unit's fixed cost: its prologue (Q tile load) and epilogue (output staging and store) take
// about as many instructions as two 64-row kv tiles of the loop.
constexpr int64_t kUnitFixedRows = 128;

// kv rows in [kv_begin, kv_end) that query rows [q_begin, q_end) of a request (qo_len queries
// aligned to the end of kv_len keys) may see: the span prefill_kernel.h's run_unit streams.
inline int64_t visible_kv_rows(int64_t q_begin, int64_t q_end, int64_t kv_begin, int64_t kv_end, int64_t qo_len,
                               int64_t kv_len, bool causal, int64_t window_left) {
  if (q_end <= q_begin) return 0;  // an empty request: the kernel skips it
  const int64_t delta = kv_len - qo_len;
  int64_t lo = kv_begin, hi = std::min(kv_end, kv_len);
  if (causal) hi = std::min(hi, q_end + delta);
  if (window_left >= 0) lo = std::max(lo, q_begin + delta - window_left);
  return std::max<int64_t>(hi - lo, 0);
}

}  // namespace cpu
}  // namespace flashinfer_ops
