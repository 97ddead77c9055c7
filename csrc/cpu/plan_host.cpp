// plan()'s host work in one call: the index arrays' content checks, the kv lengths, the kv
// split (the policy below), the schedule (planner.cpp) and its GPU work lists (work_lists.cpp).
// A serving loop plans every step, and on a serving host each Python-level step of this (a
// numpy reduction, a tensor slice) costs microseconds; here the whole of it is one call.
//
// The checks (fill_kv_lens's) only say whether the arrays are valid: on false the Python
// wrapper runs its own checks, which name the array and entry at fault. So the error messages live in one place
// and the common, valid plan pays for no message formatting.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../include/plan_info.h"
#include "../include/single_prefill_split.h"
#include "attention_cpu.h"
#include "unit_cost.h"

namespace flashinfer_ops {
namespace cpu {
namespace {

// Split policy. Minimum kv chunk when splitting a prefill request over several workers.
constexpr int64_t kMinKvChunk = 256;
// The shortest decode task: two 64-row tiles. Small batches are latency-bound (batch 1 at kv
// 4k streams 4 tiles per task at kMinKvChunk); shorter tasks put more blocks to work at once.
constexpr int64_t kDecodeMinKvChunk = 128;
// Decode blocks per GPU multiprocessor the policy fills when the caller gives no grid, and the
// number of the tensor-core kernel's blocks on a 16-bit cache that stream at the full memory
// bandwidth (H200, d128: 256 unsplit tasks of kv 4k in one round, 130-133 us, against 140-145
// for 768 split tasks over the whole grid of 396). Its FP8 and CUDA-core kernels need more:
// unsplit at batch 32-64, kv 4k-16k, they lost 1-15% and 12-22%.
constexpr int64_t kDecodeBlocksPerSm = 2;
// How much cheaper by the decode cost model a split schedule must be than the unsplit one. The
// model charges a round by its longest task and sees neither the merge of the splits nor that
// the unsplit tasks of one length, between one and two rounds, stream at the full bandwidth
// when dealt two per block (deal_decode_tasks): H200, d128, 8 kv heads, 396 blocks, batch 64 at
// kv 1k / 2k: unsplit and dealt 80.4 / 140.3 us, split in two 89.8 / 150.5 us, where the model
// had the split 10% / 17% cheaper.
constexpr double kDecodeSplitGain = 0.2;
// How much cheaper by the rounds model a split that fills the last round of two rounds or more
// must be (round_filling_decode_chunk). The model prices a part-filled last round as a full
// one; its few blocks stream faster than a full round's, so measured gains are about a third of
// the model's (H200, d128, 8 kv heads, 396 blocks: batch 256 at kv 16k, 4 splits, 8.5% by the
// model, 2.8% measured; at kv 4k the best split is 2.9% by the model and measured no faster).
constexpr double kDecodeRoundFillGain = 0.05;
// The merge of a split request: one wave per query head reads the splits' partial rows
// plan_info::kMergeRowsInFlight at a time, one L2 round trip each (split_merge.h), after the
// request's last task, so at small batches each group of that many splits lengthens the
// launch's tail by kDecodeMergeGroupCost rows' time. Fitted to batch 1 with the chunk forced
// (H200, d128, 8 kv heads, 396 blocks, one round): kv 16k at 384 / 512 / 640 rows per split
// (43 / 32 / 26 splits) 27.6-28.9 / 26.4-26.9 / 26.5 us; kv 4k at 128 / 256 (32 / 16 splits)
// 11.6-11.8 / 11.2-11.3 us; kv 2k at 128 / 256 (16 / 8) 8.9-9.1 / 10.7-10.8 us.
constexpr int64_t kDecodeMergeGroupCost = 70;
// The CUDA-core kernels' rows weigh more against the merge: a batch-1 block steps through its
// task's rows a memory round trip per step, where the tensor-core blocks keep a whole task's
// rows in flight. Fitted to batch 1 under cold caches with the chunk forced (H100, d128, 8 kv
// heads, 10 calls a graph; fp16 on 396 blocks, e4m3 on 528): fp16 kv 4k 128 / 256 rows 14.2 /
// 15.7 us, kv 8k 192 / 256 21.8 / 20.7, kv 16k 384 / 512 34.4 / 34.2; e4m3 kv 4k 128 / 256 14.6
// / 17.3, kv 8k 192 / 256 20.4 / 20.4, kv 16k 256 / 512 30.3 / 33.8. Below 64 batch 1 at kv 4k
// takes 32 splits; above 32, kv 8k keeps 32 splits of 256 rows over 43 of 192.
constexpr int64_t kDecodeMergeGroupCostCudaCores = 50;
// Decode chunk candidates in units of kDecodeMinKvChunk, 8% apart.
constexpr int kLadderSteps = 90;

const std::array<double, kLadderSteps>& chunk_ladder() {
  static const std::array<double, kLadderSteps> ladder = [] {
    std::array<double, kLadderSteps> l{};
    for (int k = 0; k < kLadderSteps; ++k) l[k] = std::pow(1.08, k);
    return l;
  }();
  return ladder;
}

int64_t round_up_64(int64_t x) { return (x + 63) / 64 * 64; }

// The (item, kv head) tasks of a decode batch split into chunks of `chunk` rows.
int64_t decode_tasks(const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads, int64_t chunk) {
  int64_t tasks = 0;
  for (int64_t r = 0; r < batch; ++r) tasks += std::max<int64_t>(ceil_div(kv_lens[r], chunk), 1);
  return tasks * num_kv_heads;
}

// The decode rounds model: ceil(tasks / grid) rounds of the grid, each costed as its longest
// task, `chunk` rows (the longest request when unsplit) plus kDecodeTaskCost.
double decode_rounds_cost(const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads, int64_t grid, int64_t chunk) {
  const int64_t tasks = decode_tasks(kv_lens, batch, num_kv_heads, chunk);
  return static_cast<double>(ceil_div(tasks, grid)) * static_cast<double>(chunk + kDecodeTaskCost);
}

// A merge group's cost in rows for the kernel a plan is for.
int64_t decode_merge_group_cost(DecodeKernel kernel) {
  const bool cuda_cores = kernel == DecodeKernel::kCudaCores16Bit || kernel == DecodeKernel::kCudaCoresFp8;
  return cuda_cores ? kDecodeMergeGroupCostCudaCores : kDecodeMergeGroupCost;
}

// The merge's tail for splits of `chunk` rows of the longest request, group_cost a group
// (decode_merge_group_cost).
double decode_merge_cost(int64_t max_kv, int64_t chunk, int64_t group_cost) {
  return static_cast<double>(ceil_div(ceil_div(max_kv, chunk), plan_info::kMergeRowsInFlight) * group_cost);
}

// Under two rounds of decode tasks: the chunk whose schedule should finish first, taking a
// round's time as its longest task's rows plus kDecodeTaskCost, and a split's merge tail
// (decode_merge_cost). Candidates: no split, s-way
// splits of the longest request (s = 2..16) and the geometric ladder (for uneven lengths).
// Fewer tasks win ties (each split costs a merge): candidates go largest first and only a
// strictly cheaper one replaces the best. The best split replaces no split only when
// kDecodeSplitGain cheaper, both costed, where saturating_blocks > 0, as no faster than their
// rows streamed by that many blocks: once that many stream, more blocks or fuller rounds only
// share the same bandwidth; so among splits too, one of fewer tasks that the bound prices alike
// wins by its smaller merge (H100, d128, 8 kv heads, tensor cores on fp16, against the rounds
// alone: batch 2 kv 8k 256 tasks of 512 rows 0.954 of the time of 352 of 384, batch 4 kv 8k /
// batch 2 kv 16k 256 of 1024 rows 0.981 / 0.986 of 384 of 704, batch 4 kv 16k 256 of 2048
// 0.979 of 384 of 1408). Batch 1 takes fewer, longer splits than would fill the grid, as the
// merge tail has it (tensor cores, kv 4k: 16 splits of 256 rows, not 32 of 128; kv 16k: 32 of
// 512, not 43 of 384; the CUDA-core kernels' lighter merge groups take 32 of 128 at kv 4k);
// batch 16 x 8 kv heads on 396 blocks takes 3 splits (one round, 97% full) over 4; with the
// bound, batch 32 keeps one round of 256 unsplit tasks (at kv 4k, 3 splits in two full rounds
// are 24% cheaper by the rounds but 3% by the bound) and batch 64 two rounds of 512, dealt two
// per block. max_kv: the longest of the batch's kv_lens; merge_group_cost: a merge group's
// rows for the plan's kernel (decode_merge_group_cost).
int64_t cheapest_decode_chunk(const int32_t* kv_lens, int64_t batch, int64_t max_kv, int64_t num_kv_heads,
                              int64_t grid, int64_t saturating_blocks, int64_t merge_group_cost) {
  double kv_rows = 0.0;
  for (int64_t r = 0; r < batch; ++r) kv_rows += static_cast<double>(kv_lens[r]);
  std::vector<int64_t> chunks;
  for (int64_t s = 2; s <= 16; ++s) chunks.push_back(round_up_64(std::max(ceil_div(max_kv, s), kDecodeMinKvChunk)));
  for (double step : chunk_ladder()) {
    const double rows = kDecodeMinKvChunk * step;
    if (rows >= static_cast<double>(max_kv)) break;
    // floor((rows + 63) / 64) * 64, the rounding the ladder was tuned with (division by 64 is exact).
    chunks.push_back(static_cast<int64_t>(std::floor((rows + 63.0) / 64.0)) * 64);
  }
  chunks.erase(std::remove_if(chunks.begin(), chunks.end(), [&](int64_t c) { return c >= max_kv; }),
               chunks.end());
  std::sort(chunks.begin(), chunks.end(), std::greater<int64_t>());
  chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());

  auto rounds_cost = [&](int64_t chunk) { return decode_rounds_cost(kv_lens, batch, num_kv_heads, grid, chunk); };
  const double bound = saturating_blocks > 0 ? kv_rows * static_cast<double>(num_kv_heads) /
                                                       static_cast<double>(saturating_blocks) +
                                                   kDecodeTaskCost
                                             : 0.0;
  // Among splits the bound prices alike, the one of the shortest tasks: the bound holds only while
  // the longest task ends with the rest.
  int64_t best = 0;
  double best_cost = std::numeric_limits<double>::infinity(), best_rounds = 0.0;
  for (int64_t chunk : chunks) {
    const double rounds = rounds_cost(chunk);
    const double cost = std::max(rounds, bound) + decode_merge_cost(max_kv, chunk, merge_group_cost);
    if (cost < best_cost || (cost == best_cost && rounds < best_rounds)) {
      best_cost = cost;
      best = chunk;
      best_rounds = rounds;
    }
  }
  if (best == 0) return 0;
  const double unsplit = std::max(rounds_cost(max_kv), bound);
  return best_cost < unsplit * (1.0 - kDecodeSplitGain) ? best : 0;
}

// The tensor-core kernel's wide shape (8 warps, 128-row K/V tiles, one block per multiprocessor)
// runs a plan whose tasks are at most wide_tasks (decode_wide_tasks); the narrow shape runs any
// other. When the cheapest split has more tasks than that, the split that fits is taken if its
// chunk is at most twice as long: as many tiles per task in series, half the splits to merge,
// and each block keeps twice the bytes in flight. Measured with the chunk forced (H200, d128, 8 kv
// heads, batch 1): kv 8k 256 rows (256 tasks, narrow) 13.2 us against 512 (128, wide) 12.4; kv
// 16k 512 (narrow) 24.9 against 1024 (wide) 23.8 (fp16; e4m3 8k 13.3 / 12.5, 16k level). Where
// the fitting split is longer still (kv 2k / 4k: the cheapest already fits; halving its tasks
// again was 4-16% slower) the cheapest stays. Returns chunk when nothing fits.
int64_t wide_decode_chunk(const int32_t* kv_lens, int64_t batch, int64_t max_kv, int64_t num_kv_heads,
                          int64_t chunk, int64_t wide_tasks) {
  auto fits = [&](int64_t c) { return decode_tasks(kv_lens, batch, num_kv_heads, c) <= wide_tasks; };
  if (wide_tasks <= 0 || chunk <= 0 || fits(chunk)) return chunk;
  // Chunks stay multiples of 64 (the narrow shape's tile) and below the longest request (a split).
  for (int64_t c = chunk + 64; c <= 2 * chunk && c < max_kv; c += 64) {
    if (fits(c)) return c;
  }
  return chunk;
}

// Decode over two rounds or more of a persistent grid of `grid` blocks: when some task exceeds
// the mean block load, the kv chunk of a quarter of it (else 0). The item order
// (decode_order.cpp) evens out tasks of similar size; one as long as a block's share (a long
// request among many short ones, as heavy-tailed serving batches have) would finish last
// whatever the order. A quarter: by the cost model, log-normal kv lengths (median 1.1k) at batch
// 128/256/512 end at 1.16/1.07/1.04 of the mean (a half: 1.11/1.11/1.19; splitting only tasks
// over twice the mean into chunks of the mean: 1.36/1.83/1.90). Equal lengths never split here:
// with two rounds or more, the mean block load is at least two tasks.
int64_t balancing_decode_chunk(const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads, int64_t grid) {
  double total = 0.0;
  int64_t longest = 0;
  for (int64_t r = 0; r < batch; ++r) {
    total += static_cast<double>(kv_lens[r] + kDecodeTaskCost);
    longest = std::max<int64_t>(longest, kv_lens[r]);
  }
  const double mean = total * static_cast<double>(num_kv_heads) / static_cast<double>(grid);
  if (static_cast<double>(longest + kDecodeTaskCost) <= mean) return 0;
  return round_up_64(std::max<int64_t>(kMinKvChunk, static_cast<int64_t>(mean / 4)));
}

// The shortest and longest of a batch's kv lengths.
struct KvRange {
  int64_t min = std::numeric_limits<int64_t>::max(), max = 0;
  // Every request about as long as the longest: the round-filling split's and the stream deal's
  // batches of equal tasks.
  bool within_a_sixteenth() const { return max - min <= max / 16; }
};
KvRange kv_range(const int32_t* kv_lens, int64_t batch) {
  KvRange range;
  for (int64_t r = 0; r < batch; ++r) {
    range.min = std::min<int64_t>(range.min, kv_lens[r]);
    range.max = std::max<int64_t>(range.max, kv_lens[r]);
  }
  return range;
}

bool all_equal(const int32_t* kv_lens, int64_t batch) {
  for (int64_t r = 1; r < batch; ++r) {
    if (kv_lens[r] != kv_lens[0]) return false;
  }
  return true;
}

// Decode over two rounds or more of a persistent grid of `grid` blocks, every request about as
// long as the longest (within 1/16): the kv chunk that fills the grid's last round, or 0. The
// blocks take the tasks in turn, so k full rounds and a last one of a few tasks leave most of
// the grid idle while those few stream (batch 256 at kv 16k, 8 kv heads, 396 blocks: 2048 tasks,
// 5 rounds and 68). Split s ways (s = 2..8, fewest first on ties), the tasks fill the rounds
// better; a split is taken when the rounds model (decode_rounds_cost) has it
// kDecodeRoundFillGain cheaper than no split. Unequal lengths are left
// to the item order (decode_order.cpp), which the model does not price.
int64_t round_filling_decode_chunk(const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads, int64_t grid) {
  const KvRange range = kv_range(kv_lens, batch);
  if (!range.within_a_sixteenth()) return 0;
  const int64_t max_kv = range.max;
  auto rounds_cost = [&](int64_t chunk) { return decode_rounds_cost(kv_lens, batch, num_kv_heads, grid, chunk); };
  int64_t best = 0;
  double best_cost = rounds_cost(max_kv) * (1.0 - kDecodeRoundFillGain);
  for (int64_t s = 2; s <= 8; ++s) {
    const int64_t chunk = round_up_64(ceil_div(max_kv, s));
    if (chunk < kMinKvChunk || chunk >= max_kv) continue;
    const double cost = rounds_cost(chunk);
    if (cost < best_cost) {
      best_cost = cost;
      best = chunk;
    }
  }
  return best;
}

// Prefill on a persistent grid of `grid` blocks: the kv chunk that keeps every unit within twice
// the mean block load, or 0 when no unit exceeds it. A unit longer than that (a request with a
// long kv cache and few new tokens, beside requests that fill the grid) would finish last
// whatever the work lists do; split into chunks of about the mean load, it spreads over the
// grid. Twice, because a split costs partial rows and a merge: a single causal request, whose
// longest q tile is under twice the mean, is better unsplit (kernel_notes.md).
int64_t balancing_prefill_chunk(const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads,
                                int64_t q_tile_rows, int64_t grid, bool causal, int64_t window_left) {
  double total = 0.0;
  int64_t longest = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t qo = qo_indptr[r + 1] - qo_indptr[r], kv = kv_lens[r];
    for (int64_t q0 = 0; q0 < std::max<int64_t>(qo, 1); q0 += q_tile_rows) {
      const int64_t rows = visible_kv_rows(q0, std::min(q0 + q_tile_rows, qo), 0, kv, qo, kv, causal, window_left);
      total += static_cast<double>(rows + kUnitFixedRows);
      longest = std::max(longest, rows);
    }
  }
  const double mean = total * static_cast<double>(num_kv_heads) / static_cast<double>(grid);
  if (static_cast<double>(longest + kUnitFixedRows) <= 2.0 * mean) return 0;
  return round_up_64(std::max<int64_t>(kMinKvChunk, static_cast<int64_t>(mean)));
}

// Whether a decode plan stays unsplit because the launch runs its tasks on the four-block grid
// in rounds it fills: the tensor-core kernel on FP8 caches (its head columns), equal tasks that
// deal_decode_tasks gives that grid unsplit (deals_four_block_grid; four_block_grid 0 where the
// launch runs the whole resident grid whatever the plan), filling its rounds to at least 15/16.
// There the splits that the rounds model prefers on the default grid were slower: H100, d128, 8
// kv heads, e4m3, 10 calls a graph, two rounds, unsplit (528 blocks) against the three-way split
// on 396: batch 64 kv 4k 0.971 of the time (187.7 against 193.3 us), kv 16k 0.997, batch 128 kv
// 16k 0.991. Rounds filled less (batch 50 or 100 x 8 kv heads) were not measured and keep the
// policy's split. Past three default rounds (up to four of the four-block grid, kv up to 4096: batch
// 186-198 and 248-264 at 8 kv heads) the plan it keeps unsplit would otherwise take the stream
// deal (streams_pay): e4m3 batch 256 kv 1k 0.976 of its time, kv 2k 0.985, kv 4k 1.000; kv 16k,
// which keeps the streams, 1.006. Three full rounds (batch 186-198) lie between batch 128's two and
// batch 256's four, both measured faster on that grid, and were not measured themselves.
bool four_block_unsplit(const int32_t* kv_lens, int64_t batch, int64_t tasks, int64_t grid, DecodeKernel kernel,
                        DecodeDeal deal, int64_t four_block_grid) {
  if (kernel != DecodeKernel::kTensorCoresFp8 || grid <= 0 || batch <= 0 ||
      !all_equal(kv_lens, batch) || !deals_four_block_grid(deal, kernel, tasks, kv_lens[0], grid, four_block_grid)) {
    return false;
  }
  return fills_four_block_rounds(tasks, four_block_grid);
}

// Whether plan() deals a decode batch of more than one round as streams (stream_decode_items),
// for `kernel` on a grid of `grid` blocks, whose four-block grid (deal_decode_tasks) is
// four_block_grid (0: none). Measured on the H100 (d128, 32 / 8 heads, page 16, equal kv 1k-16k,
// the splits merged in the launch), time against the default deal: the CUDA-core kernel on 16-bit
// caches with a four-block grid (its 4-row tile) 0.950-0.993 at batch 64-256; the tensor-core
// kernel on FP8 caches 0.958-0.995 at batch 128-256, where its default is the whole grid with a
// part-filled last round, but 0.983-1.000 at batch 64 kv 1k-2k against 0.966-0.985 for its default
// there (two tasks a block, without a merge launch), so it takes streams past two rounds only;
// where it has a four-block grid (its head columns), that grid's deal of up to three rounds is the
// faster one (H100, e4m3 batch 128 kv 1k-2k), and streams start past three rounds, except where
// that grid's deal keeps the tasks unsplit in four of its rounds (four_block_unsplit). Not taken for
// the tensor-core kernel on 16-bit caches (a block per task past two rounds: 1.003-1.029) nor the
// CUDA-core kernel on FP8 caches (0.974-1.006). Requests about as long as each other (within
// 1/16, as measured) and of at least kStreamMinKv rows: shorter ones would make pieces of a few
// tiles, which pay a first tile and a combination each.
constexpr int64_t kStreamMinKv = 512;
bool streams_pay(const int32_t* kv_lens, int64_t batch, int64_t num_kv_heads, int64_t grid, DecodeKernel kernel,
                 DecodeDeal deal, int64_t four_block_grid) {
  const int64_t tasks = batch * num_kv_heads;
  bool gains = false;
  switch (kernel) {
    case DecodeKernel::kCudaCores16Bit: gains = four_block_grid > 0; break;
    case DecodeKernel::kTensorCoresFp8:
      gains = tasks > (four_block_grid > 0 ? 3 : 2) * grid &&
              !four_block_unsplit(kv_lens, batch, tasks, grid, kernel, deal, four_block_grid);
      break;
    default: break;
  }
  const KvRange range = kv_range(kv_lens, batch);
  const bool lengths = range.min >= kStreamMinKv && range.within_a_sixteenth();
  return decode_stream_deal(gains && lengths);
}

// prefill_grid: the blocks of the GPU prefill kernels' persistent grid (0: unknown), with causal
// and window_left for its cost model. decode_kernel: which decode kernel the plan is for, whose
// bandwidth bound (attention_cpu.h) the decode cost model takes (cheapest_decode_chunk).
// decode_wide_tasks: the most tasks for which the launch takes the wide shape (0: none;
// wide_decode_chunk). decode_task_blocks: the launch takes the plan's task count as its grid,
// which with the kernel gives how tasks past the resident grid are dealt (decode_deal).
// decode_four_block_grid: the kernel's launch at four blocks per multiprocessor (0: none), which
// deal_decode_tasks gives equal unsplit tasks of one to three rounds, and for the FP8 tensor-core
// kernel up to four of its own rounds that they fill (four_block_unsplit).
int64_t choose_kv_chunk_size(bool gpu, const int32_t* qo_indptr, const int32_t* kv_lens, int64_t batch,
                             int64_t num_kv_heads, int64_t q_tile_rows, int64_t workers, int64_t decode_grid,
                             int64_t prefill_grid, bool causal, int64_t window_left,
                             DecodeKernel decode_kernel, int64_t decode_wide_tasks, bool decode_task_blocks,
                             int64_t decode_four_block_grid) {
  if (batch == 0) return 0;
  const DecodeDeal deal = decode_deal(decode_kernel, decode_task_blocks);
  int64_t max_qo = 0, tiles = 0, max_kv = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t qo = qo_indptr ? qo_indptr[r + 1] - qo_indptr[r] : 1;
    max_qo = std::max(max_qo, qo);
    tiles += std::max<int64_t>(ceil_div(qo, q_tile_rows), 1);
    max_kv = std::max<int64_t>(max_kv, kv_lens[r]);
  }
  // Decode: one block per (request, kv head) streams its kv range; split long requests until
  // every block of the grid (or kDecodeBlocksPerSm per multiprocessor) has work.
  const bool decode = gpu && max_qo <= 1;
  const int64_t device_blocks = workers * kDecodeBlocksPerSm;  // kDecodeBlocksPerSm on every multiprocessor
  const int64_t saturating_blocks = bandwidth_bound(decode_kernel) ? device_blocks : 0;
  if (decode) workers = decode_grid > 0 ? decode_grid : device_blocks;
  const int64_t tasks = tiles * num_kv_heads;
  if (decode && four_block_unsplit(kv_lens, batch, tasks, decode_grid, decode_kernel, deal,
                                   decode_task_blocks ? decode_four_block_grid : 0)) {
    return 0;
  }
  if (decode && decode_grid > 0 && tasks < 2 * workers) {
    if (max_kv < 2 * kDecodeMinKvChunk) return 0;
    const int64_t chunk = cheapest_decode_chunk(kv_lens, batch, max_kv, num_kv_heads, workers, saturating_blocks,
                                                decode_merge_group_cost(decode_kernel));
    return wide_decode_chunk(kv_lens, batch, max_kv, num_kv_heads, chunk, decode_wide_tasks);
  }
  if (decode && decode_grid > 0) {
    const int64_t chunk = balancing_decode_chunk(kv_lens, batch, num_kv_heads, decode_grid);
    if (chunk > 0) return chunk < max_kv ? chunk : 0;
    // Tasks of one length that the launch deals a block each need no last round filled: the
    // hardware starts each block as a place frees up (deal_decode_tasks). H100, d128, 8 kv heads,
    // tensor cores on fp16, kv 16k: unsplit 0.994 / 0.996 of the round-filling split's time at
    // batch 128 / 256, and no merge.
    if (all_equal(kv_lens, batch) && deals_block_per_task(deal, tasks, decode_grid)) {
      return 0;
    }
    return round_filling_decode_chunk(kv_lens, batch, num_kv_heads, decode_grid);
  }
  if (max_kv < 2 * kMinKvChunk) return 0;
  if (tasks < workers) {
    const int64_t splits = ceil_div(workers, tasks);
    const int64_t chunk = std::max(kMinKvChunk, ceil_div(max_kv, splits));
    return round_up_64(chunk);
  }
  if (gpu && !decode && prefill_grid > 0) {
    const int64_t chunk = balancing_prefill_chunk(qo_indptr, kv_lens, batch, num_kv_heads, q_tile_rows, prefill_grid,
                                                  causal, window_left);
    return chunk < max_kv ? chunk : 0;
  }
  return 0;
}

// decode_kernel as it crosses from Python: one of DecodeKernel's values, else an error naming `caller`.
DecodeKernel checked_decode_kernel(int64_t decode_kernel, const char* caller) {
  TORCH_CHECK(decode_kernel >= static_cast<int64_t>(DecodeKernel::kNotMeasured) &&
                  decode_kernel <= static_cast<int64_t>(DecodeKernel::kTensorCoresFp8),
              caller, ": decode_kernel must be one of the DECODE_KERNEL_* values, got ", decode_kernel);
  return static_cast<DecodeKernel>(decode_kernel);
}

void check_host_int32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kInt && t.is_contiguous() && t.dim() == 1,
              "plan_host: ", name, " must be a contiguous 1-D int32 host tensor");
}

bool valid_indptr(const int32_t* indptr, int64_t batch) {
  if (indptr[0] != 0) return false;
  for (int64_t r = 0; r < batch; ++r) {
    if (indptr[r + 1] < indptr[r]) return false;
  }
  return true;
}

// kv_lens from kv_indptr: the rows between its entries, or (last_page_len given) pages of
// page_size rows, the last one holding last_page_len rows, out of num_indices page ids. False
// when the arrays are invalid (kv_lens then partly written).
bool fill_kv_lens(const at::Tensor& kv_indptr, const at::Tensor& last_page_len, int64_t page_size,
                  int64_t num_indices, at::Tensor& kv_lens) {
  check_host_int32(kv_indptr, "kv_indptr");
  check_host_int32(kv_lens, "kv_lens");
  const int64_t batch = kv_indptr.numel() - 1;
  if (batch < 0 || kv_lens.numel() != batch) return false;
  const int32_t* kv = kv_indptr.data_ptr<int32_t>();
  if (!valid_indptr(kv, batch)) return false;
  int32_t* lens = kv_lens.data_ptr<int32_t>();
  if (last_page_len.numel() == 0 && page_size == 0) {
    for (int64_t r = 0; r < batch; ++r) lens[r] = kv[r + 1] - kv[r];
    return true;
  }
  check_host_int32(last_page_len, "last_page_len");
  if (last_page_len.numel() != batch || page_size <= 0 || num_indices < kv[batch]) return false;
  const int32_t* last = last_page_len.data_ptr<int32_t>();
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t pages = kv[r + 1] - kv[r];
    if (pages > 0 && (last[r] < 1 || last[r] > page_size)) return false;
    lens[r] = pages > 0 ? static_cast<int32_t>((pages - 1) * page_size + last[r]) : 0;
  }
  return true;
}

// Returns (valid, kv_chunk_size, needed, partial_rows, total_qo) for the batch of kv_lens
// (fill_kv_lens's). qo_indptr empty: one query row per request (decode); valid is false when a
// given qo_indptr is not batch + 1 non-decreasing entries from 0, and schedule is then untouched.
// kv_chunk_size < 0: chosen by the policy. work_lists > 0 (prefill on the GPU: the blocks of the
// kernel's persistent grid): the schedule also gets work lists for that many blocks, costed
// with causal and window_left (work_lists.cpp). page_indptr (paged caches; may be empty): the
// requests' offsets into kv_indices, which the schedule then carries (plan_info.h, kPageBase).
// decode_wide_tasks: see choose_kv_chunk_size. decode_task_blocks: the launch takes the plan's
// size (kTaskBlocks); false where it runs the whole resident grid whatever the plan (captured
// launches of CUDA-graph wrappers), so the plan deals for that. decode_four_block_grid: the
// kernel's launch at four blocks per multiprocessor (the CUDA-core 4-row tile on 16-bit caches,
// the tensor-core head columns on FP8 caches) that run() takes when the plan asks for it
// (deal_decode_tasks; 0: none). decode_kernel: which decode kernel the plan is
// for (DecodeKernel's values), for its bandwidth bound (attention_cpu.h) and the stream deal's
// rule (streams_pay).
std::tuple<bool, int64_t, int64_t, int64_t, int64_t> plan_host(const at::Tensor& qo_indptr, const at::Tensor& kv_lens,
                                                               at::Tensor schedule, int64_t q_tile_rows,
                                                               int64_t num_kv_heads, int64_t workers,
                                                               int64_t decode_grid, int64_t kv_chunk_size, bool gpu,
                                                               int64_t work_lists, bool causal, int64_t window_left,
                                                               const at::Tensor& page_indptr,
                                                               int64_t decode_wide_tasks, bool decode_task_blocks,
                                                               int64_t decode_four_block_grid,
                                                               int64_t decode_kernel) {
  namespace layout = ::flashinfer_ops::plan_info;
  check_host_int32(kv_lens, "kv_lens");
  check_host_int32(schedule, "schedule");
  const DecodeKernel kernel = checked_decode_kernel(decode_kernel, "plan_host");
  const int64_t batch = kv_lens.numel();
  if (page_indptr.numel() > 0) {
    check_host_int32(page_indptr, "page_indptr");
    TORCH_CHECK(page_indptr.numel() == batch + 1, "plan_host: page_indptr must have batch + 1 = ", batch + 1,
                " entries, got ", page_indptr.numel());
  }
  const int32_t* qo = nullptr;
  std::vector<int32_t> decode_indptr;
  if (qo_indptr.numel() == 0) {  // decode
    decode_indptr.resize(batch + 1);
    for (int64_t r = 0; r <= batch; ++r) decode_indptr[r] = static_cast<int32_t>(r);
    qo = decode_indptr.data();
  } else {
    check_host_int32(qo_indptr, "qo_indptr");
    qo = qo_indptr.data_ptr<int32_t>();
    if (qo_indptr.numel() != batch + 1 || !valid_indptr(qo, batch)) {
      return std::make_tuple(false, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0});
    }
  }
  const int32_t* lens = kv_lens.data_ptr<int32_t>();
  // Decode kernels take their own tasks: the prefill grid's lists (and its balance) are for prefill.
  const int64_t lists = decode_indptr.empty() ? work_lists : 0;
  const DecodeDeal deal = decode_deal(kernel, decode_task_blocks);
  // The stream deal (decode_order.cpp, stream_decode_items): batches of more than one round of
  // the grid, launched at the plan's size, planned unsplit and then cut into streams; where the
  // streams' layout does not hold, the policy's plan after all.
  const bool stream = !decode_indptr.empty() && gpu && decode_task_blocks && kv_chunk_size < 0 &&
                      decode_grid > 0 && batch * num_kv_heads > decode_grid &&
                      streams_pay(lens, batch, num_kv_heads, decode_grid, kernel, deal, decode_four_block_grid);
  int32_t* out = schedule.data_ptr<int32_t>();
  const auto schedule_for = [&](int64_t chunk) {
    plan_schedule(qo, lens, batch, q_tile_rows, chunk, out, schedule.numel());
    if (page_indptr.numel() > 0) {
      const int32_t* first_page = page_indptr.data_ptr<int32_t>();
      int32_t* items = out + layout::kHeaderSize;
      for (int64_t i = 0; i < out[layout::kNumItems]; ++i) {
        int32_t* item = items + layout::kItemFields * i;
        item[layout::kPageBase] = first_page[item[layout::kRequest]];
      }
    }
  };
  bool streamed = false;
  if (stream) {
    schedule_for(0);
    streamed = stream_decode_items(out, schedule.numel(), num_kv_heads, decode_grid);
    if (streamed) kv_chunk_size = 0;  // planned unsplit; the streams' order and launch size are the deal
  }
  if (!streamed) {
    if (kv_chunk_size < 0) {
      kv_chunk_size = choose_kv_chunk_size(gpu, qo, lens, batch, num_kv_heads, q_tile_rows, workers, decode_grid,
                                           lists, causal, window_left, kernel, decode_wide_tasks,
                                           decode_task_blocks, decode_four_block_grid);
    }
    schedule_for(kv_chunk_size);
    if (!decode_indptr.empty() && gpu) {
      order_decode_items(out, num_kv_heads, decode_grid);
      deal_decode_tasks(out, num_kv_heads, decode_grid, deal, decode_task_blocks ? decode_four_block_grid : 0,
                        kernel);
    }
  }
  const int64_t needed = plan_work_lists(out, schedule.numel(), qo, lens, num_kv_heads, lists, causal, window_left);
  return std::make_tuple(true, kv_chunk_size, needed, int64_t{out[layout::kPartialRows]}, int64_t{qo[batch]});
}

int64_t choose_kv_chunk_size_py(bool gpu, const at::Tensor& qo_indptr, const at::Tensor& kv_lens,
                                int64_t num_kv_heads, int64_t q_tile_rows, int64_t workers, int64_t decode_grid,
                                int64_t prefill_grid, bool causal, int64_t window_left,
                                int64_t decode_wide_tasks, bool decode_task_blocks, int64_t decode_kernel,
                                int64_t decode_four_block_grid) {
  check_host_int32(qo_indptr, "qo_indptr");
  check_host_int32(kv_lens, "kv_lens");
  const DecodeKernel kernel = checked_decode_kernel(decode_kernel, "choose_kv_chunk_size");
  TORCH_CHECK(qo_indptr.numel() == kv_lens.numel() + 1, "choose_kv_chunk_size: qo_indptr must have ",
              kv_lens.numel() + 1, " entries");
  return choose_kv_chunk_size(gpu, qo_indptr.data_ptr<int32_t>(), kv_lens.data_ptr<int32_t>(), kv_lens.numel(),
                              num_kv_heads, q_tile_rows, workers, decode_grid, prefill_grid, causal, window_left,
                              kernel, decode_wide_tasks, decode_task_blocks, decode_four_block_grid);
}

// single_prefill's kv split on a GPU of `slots` resident blocks, for tiles of tile_rows packed
// query rows and kv_tile K/V rows: (splits, chunk_tiles); see single_prefill_split.h.
std::tuple<int64_t, int64_t> single_prefill_split_py(int64_t qo_len, int64_t kv_len, int64_t num_qo_heads,
                                                     int64_t num_kv_heads, int64_t tile_rows, int64_t kv_tile,
                                                     bool causal, int64_t window_left, int64_t slots,
                                                     int64_t max_splits) {
  TORCH_CHECK(qo_len >= 0 && kv_len >= 0 && num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0 && tile_rows > 0 &&
                  kv_tile > 0 && qo_len * (num_qo_heads / num_kv_heads) < (int64_t{1} << 31),
              "single_prefill_split: invalid geometry");
  namespace ss = flashinfer_ops::single_split;
  const ss::Geometry g{static_cast<int>(qo_len),    static_cast<int>(kv_len),  static_cast<int>(num_qo_heads / num_kv_heads),
                       static_cast<int>(tile_rows), static_cast<int>(kv_tile), causal,
                       static_cast<int>(window_left)};
  const ss::Split split = ss::choose_single_prefill_split(g, static_cast<int>(num_kv_heads), static_cast<int>(slots),
                                                          static_cast<int>(max_splits));
  return std::make_tuple(int64_t{split.splits}, int64_t{split.chunk_tiles});
}

}  // namespace

void bind_plan_host(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("plan_host", &plan_host,
        "plan()'s host work: (valid, kv_chunk_size, needed, partial_rows, total_qo); see plan_host.cpp",
        py::arg("qo_indptr"), py::arg("kv_lens"), py::arg("schedule"), py::arg("q_tile_rows"), py::arg("num_kv_heads"),
        py::arg("workers"), py::arg("decode_grid"), py::arg("kv_chunk_size"), py::arg("gpu"), py::arg("work_lists"),
        py::arg("causal"), py::arg("window_left"), py::arg("page_indptr") = at::empty({0}, at::kInt),
        py::arg("decode_wide_tasks") = 0, py::arg("decode_task_blocks") = true, py::arg("decode_four_block_grid") = 0,
        py::arg("decode_kernel") = static_cast<int64_t>(DecodeKernel::kNotMeasured));
  m.def("fill_kv_lens", &fill_kv_lens,
        "(kv_indptr, last_page_len, page_size, num_indices, kv_lens out) -> valid; see plan_host.cpp");
  m.def("choose_kv_chunk_size", &choose_kv_chunk_size_py, "the kv split policy; see plan_host.cpp", py::arg("gpu"),
        py::arg("qo_indptr"), py::arg("kv_lens"), py::arg("num_kv_heads"), py::arg("q_tile_rows"), py::arg("workers"),
        py::arg("decode_grid"), py::arg("prefill_grid"), py::arg("causal"), py::arg("window_left"),
        py::arg("decode_wide_tasks") = 0, py::arg("decode_task_blocks") = true,
        py::arg("decode_kernel") = static_cast<int64_t>(DecodeKernel::kNotMeasured),
        py::arg("decode_four_block_grid") = 0);
  m.def(
      "decode_bandwidth_bound",
      [](int64_t decode_kernel) {
        return bandwidth_bound(checked_decode_kernel(decode_kernel, "decode_bandwidth_bound"));
      },
      "whether the decode kernel (a DECODE_KERNEL_* value) streams at the full bandwidth from two blocks per "
      "multiprocessor; see attention_cpu.h",
      py::arg("decode_kernel"));
  m.def("single_prefill_split", &single_prefill_split_py,
        "single_prefill's kv split: (splits, chunk_tiles); see csrc/include/single_prefill_split.h",
        py::arg("qo_len"), py::arg("kv_len"), py::arg("num_qo_heads"), py::arg("num_kv_heads"), py::arg("tile_rows"),
        py::arg("kv_tile"), py::arg("causal"), py::arg("window_left"), py::arg("slots"),
        py::arg("max_splits") = flashinfer_ops::single_split::kMaxSplits);
  m.attr("MIN_KV_CHUNK") = kMinKvChunk;
  m.attr("DECODE_TASK_COST") = kDecodeTaskCost;
  m.attr("DECODE_MIN_KV_CHUNK") = kDecodeMinKvChunk;
  m.attr("DECODE_BLOCKS_PER_SM") = kDecodeBlocksPerSm;
  m.attr("DECODE_SPLIT_GAIN") = kDecodeSplitGain;
  m.attr("DECODE_ROUND_FILL_GAIN") = kDecodeRoundFillGain;
  m.attr("DECODE_MERGE_ROWS_IN_FLIGHT") = plan_info::kMergeRowsInFlight;
  m.attr("SPLIT_COUNTER_SLOTS") = plan_info::kSplitCounterSlots;
  m.attr("DECODE_MERGE_GROUP_COST") = kDecodeMergeGroupCost;
  m.attr("DECODE_MERGE_GROUP_COST_CUDA_CORES") = kDecodeMergeGroupCostCudaCores;
  m.attr("DECODE_KERNEL_NOT_MEASURED") = static_cast<int64_t>(DecodeKernel::kNotMeasured);
  m.attr("DECODE_KERNEL_CUDA_CORES_16BIT") = static_cast<int64_t>(DecodeKernel::kCudaCores16Bit);
  m.attr("DECODE_KERNEL_CUDA_CORES_FP8") = static_cast<int64_t>(DecodeKernel::kCudaCoresFp8);
  m.attr("DECODE_KERNEL_TENSOR_CORES_16BIT") = static_cast<int64_t>(DecodeKernel::kTensorCores16Bit);
  m.attr("DECODE_KERNEL_TENSOR_CORES_FP8") = static_cast<int64_t>(DecodeKernel::kTensorCoresFp8);
}

}  // namespace cpu
}  // namespace flashinfer_ops
