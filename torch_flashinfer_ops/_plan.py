"""plan(): schedules a batch on the host and writes the schedule into the workspace.

Workspace layout (byte offsets into the user's float workspace buffer, fixed for the
wrapper's lifetime so a captured graph keeps valid addresses):

    [0, plan_bytes - counter_bytes)          plan_info, int32 (csrc/include/plan_info.h)
    [plan_bytes - counter_bytes, plan_bytes) split_counters, int32, zero between runs
    [plan_bytes, ...)                        partial_lse float32 [rows, num_qo_heads], then
                                             partial_o   float32 [rows, num_qo_heads, head_dim]

Split-KV partial results only exist for requests the planner splits. On the GPU, batch decode
counts the arrivals of each split request's tasks in split_counters so that the last one merges
the splits in the same launch; the kernel leaves the counters at zero, and the workspace zeroes
them once when it is created.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._ops import ops

if TYPE_CHECKING:
    from ._upload import Upload

PLAN_HEADER = 8
PLAN_ITEM_FIELDS = 6
PLAN_REQUEST_FIELDS = 2
_ALIGN = 256

# Tile rows per work item, by platform. The CPU kernel takes any value; 32 keeps the
# per-task scratch small while amortising K/V conversion over the GQA group.
# On the GPU a CTA of the fa2 prefill kernel takes 128 (NVIDIA) / 64 (AMD) query rows of one kv
# head, the GQA group's rows packed together, so an item covers that many rows / group tokens.
Q_TILE_ROWS = {"cpu": 32, "cuda": 128, "rocm": 64}


def q_tile_tokens(platform: str, num_qo_heads: int, num_kv_heads: int) -> int:
    """Tokens per work item: on the GPU, one CTA's rows shared by the GQA group."""
    rows = Q_TILE_ROWS.get(platform, 64)
    if platform == "cpu":
        return rows
    return max(1, rows // max(1, num_qo_heads // max(1, num_kv_heads)))


# Minimum kv chunk when splitting a request over several workers.
MIN_KV_CHUNK = 256
# A decode task's fixed cost (its start, first tile, merge) in kv rows streamed: fitted to
# H200 timings of one-round schedules (batch 16, kv 1k and 4k: 30 and 79 us per round of
# 384-row and 1408-row tasks, ~0.048 us per row plus ~12 us).
DECODE_TASK_COST = 256
# The shortest decode task: two 64-row tiles. Small batches are latency-bound (batch 1 at kv
# 4k streams 4 tiles per task at MIN_KV_CHUNK); shorter tasks put more blocks to work at once.
DECODE_MIN_KV_CHUNK = 128
# Decode chunk candidates in units of DECODE_MIN_KV_CHUNK, 8% apart (_cheapest_decode_chunk).
_CHUNK_LADDER = 1.08 ** np.arange(0, 90)
# Decode blocks per GPU multiprocessor that the split policy aims to keep busy.
DECODE_BLOCKS_PER_SM = 2


def _ceil_div(a, b):
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _gpu_workers() -> int:
    """Concurrent CTAs worth filling on the current GPU: its multiprocessors (132 on an H100)."""
    if torch.cuda.is_available():
        return _multiprocessors(torch.cuda.current_device())
    return 132


def choose_kv_chunk_size(platform: str, qo_lens: np.ndarray, kv_lens: np.ndarray,
                         num_kv_heads: int, q_tile_rows: int, decode_grid: int = 0) -> int:
    """0 (no split) unless splitting requests gives the workers a fuller or better balanced load.
    decode_grid: the blocks of the persistent decode grid, when the caller knows them.
    Host arithmetic in numpy: plan() runs once per serving step and must stay cheap."""
    if kv_lens.size == 0:
        return 0
    workers = torch.get_num_threads() if platform == "cpu" else _gpu_workers()
    decode = platform != "cpu" and int(qo_lens.max()) <= 1
    if decode:
        # Decode: one block per (request, kv head) streams its kv range; split long requests
        # until every block of the grid (or DECODE_BLOCKS_PER_SM per multiprocessor) has work
        # (batch 1 fills the GPU).
        workers = decode_grid if decode_grid > 0 else workers * DECODE_BLOCKS_PER_SM
    tiles = int(np.maximum((qo_lens + q_tile_rows - 1) // q_tile_rows, 1).sum())
    tasks = tiles * num_kv_heads
    max_kv = int(kv_lens.max())
    if decode and decode_grid > 0 and tasks < 2 * workers:
        return 0 if max_kv < 2 * DECODE_MIN_KV_CHUNK else _cheapest_decode_chunk(kv_lens, num_kv_heads, workers)
    if max_kv < 2 * MIN_KV_CHUNK:
        return 0
    if tasks < workers:
        splits = _ceil_div(workers, tasks)
        chunk = max(MIN_KV_CHUNK, _ceil_div(max_kv, splits))
        return _ceil_div(chunk, 64) * 64
    return 0


def _cheapest_decode_chunk(kv_lens: np.ndarray, num_kv_heads: int, grid: int) -> int:
    """Under two rounds of decode tasks: the chunk whose schedule should finish first, taking a
    round's time as its longest task's rows plus DECODE_TASK_COST (a task's start and merge, in
    kv rows). Candidates: no split, s-way splits of the longest request (s = 2..16) and a
    geometric ladder of chunks (8% apart) for uneven lengths, all costed at once in numpy.
    Fewer tasks win ties (each split costs a merge). This one rule covers what separate ones
    did: batch 1 fills the grid with the smallest chunk; batch 16 x 8 kv heads on 396 blocks
    takes 3 splits (one round, 97% full) over 4 (a second round of 116); batch 32 takes two
    rounds of 3 splits (97% full) over one round of 256 unsplit tasks (65%); batch 64 at kv 1k
    takes 2 splits in 3 rounds over 3 splits in 4."""
    max_kv = int(kv_lens.max())
    splits = -(-max_kv // np.arange(2, 17))
    ladder = DECODE_MIN_KV_CHUNK * _CHUNK_LADDER[: np.searchsorted(_CHUNK_LADDER, max_kv / DECODE_MIN_KV_CHUNK)]
    chunks = (np.maximum(np.concatenate([splits, ladder]), DECODE_MIN_KV_CHUNK) + 63) // 64 * 64
    chunks = np.sort(chunks[chunks < max_kv])[::-1]  # largest first: a tie keeps the fewer tasks
    chunks = np.concatenate([[max_kv], chunks]).astype(np.float64)  # max_kv: no split
    # ceil(kv / chunk) per request and chunk, at least 1; float division of these small
    # integers is exact where it matters (a quotient that is an integer stays one).
    kv_m1 = kv_lens.astype(np.float64).reshape(1, -1) - 1.0
    per_request = np.maximum(np.floor(kv_m1 / chunks[:, None]) + 1.0, 1.0)
    tasks = per_request.sum(axis=1) * num_kv_heads
    cost = np.ceil(tasks / grid) * (chunks + DECODE_TASK_COST)
    best = int(np.argmin(cost))
    return 0 if best == 0 else int(chunks[best])


@dataclasses.dataclass
class BatchPlan:
    plan_info: torch.Tensor  # int32, on the workspace's device
    partial_o: torch.Tensor  # float32 view of the workspace
    partial_lse: torch.Tensor
    split_counters: torch.Tensor  # int32 view of the workspace, zero between runs
    batch_size: int
    total_qo: int


class Workspace:
    """Carves the plan and the split-KV buffers out of the user's workspace."""

    def __init__(self, buffer: torch.Tensor):
        if not isinstance(buffer, torch.Tensor):
            raise TypeError("float_workspace_buffer must be a torch.Tensor")
        if not buffer.is_contiguous():
            raise ValueError("float_workspace_buffer must be contiguous")
        self.buffer = buffer
        self.bytes = buffer.view(-1).view(torch.uint8) if buffer.dtype != torch.uint8 else buffer.view(-1)
        total = self.bytes.numel()
        if total < 64 * 1024:
            raise ValueError(f"float_workspace_buffer is too small ({total} bytes); give at least 64 KiB")
        # The plan region: a quarter of the workspace, at most 8 MiB; its last eighth (at most
        # 256 KiB: 64Ki requests x kv heads) holds the split counters.
        self.plan_bytes = min(8 << 20, (total // 4) // _ALIGN * _ALIGN)
        self.counter_bytes = min(256 << 10, (self.plan_bytes // 8) // _ALIGN * _ALIGN)
        self.plan_info_bytes = self.plan_bytes - self.counter_bytes
        self.plan_host = torch.empty(self.plan_info_bytes // 4, dtype=torch.int32)  # host scratch
        self.split_counters = self.bytes[self.plan_info_bytes : self.plan_bytes].view(torch.int32)
        self.split_counters.zero_()
        torch._dynamo.mark_static_address(self.split_counters)
        self._partials = {}  # (num_qo_heads, head_dim) -> (partial_o, partial_lse)

    @property
    def device(self) -> torch.device:
        return self.buffer.device

    def plan_view(self) -> torch.Tensor:
        return self.bytes[: self.plan_info_bytes].view(torch.int32)

    def partial_views(self, rows: int, num_qo_heads: int, head_dim: int):
        """Fixed views for the split-KV partial results: the same tensor objects for every
        plan of one head configuration, so compiled graphs see the same inputs. They are
        marked as static addresses: run() writes them, and a cudagraph (torch.compile's
        "reduce-overhead") may only mutate inputs whose address never changes."""
        start = _ceil_div(self.plan_bytes, _ALIGN) * _ALIGN
        capacity_rows = (self.bytes.numel() - start - _ALIGN) // (4 * num_qo_heads * (head_dim + 1))
        if rows > capacity_rows:
            raise ValueError(
                f"float_workspace_buffer ({self.bytes.numel()} bytes) is too small for the split-KV "
                f"partial results of this batch ({rows} rows; it holds {capacity_rows})"
            )
        key = (num_qo_heads, head_dim)
        if key not in self._partials:
            capacity_rows = max(capacity_rows, 1)
            lse_bytes = _ceil_div(capacity_rows * num_qo_heads * 4, _ALIGN) * _ALIGN
            o_bytes = capacity_rows * num_qo_heads * head_dim * 4
            partial_lse = self.bytes[start : start + capacity_rows * num_qo_heads * 4].view(torch.float32)
            partial_o = self.bytes[start + lse_bytes : start + lse_bytes + o_bytes].view(torch.float32)
            for t in (partial_o, partial_lse):
                torch._dynamo.mark_static_address(t)
            self._partials[key] = (partial_o, partial_lse)
        return self._partials[key]

    def plan(self, platform: str, qo_indptr_host: torch.Tensor, kv_lens_host: torch.Tensor,
             num_qo_heads: int, num_kv_heads: int, head_dim: int,
             kv_chunk_size: int | None = None, decode_grid: int = 0, *, upload: Upload) -> BatchPlan:
        q_tile_rows = q_tile_tokens(platform, num_qo_heads, num_kv_heads)
        qo_indptr_np = qo_indptr_host.numpy()
        qo_lens, kv_lens = qo_indptr_np[1:] - qo_indptr_np[:-1], kv_lens_host.numpy()
        if kv_chunk_size is None:
            kv_chunk_size = choose_kv_chunk_size(platform, qo_lens, kv_lens, num_kv_heads, q_tile_rows,
                                                 decode_grid)
        # Raises ValueError, before writing anything, when the plan region is too small.
        ops.plan_batch(qo_indptr_host, kv_lens_host, self.plan_host, q_tile_rows, kv_chunk_size)
        needed = PLAN_HEADER + PLAN_REQUEST_FIELDS * kv_lens.size + PLAN_ITEM_FIELDS * int(self.plan_host[0])
        # Only the prefix a run reads travels, with the index arrays (upload.send(), by the caller).
        device_plan = self.plan_view()
        upload.add(self.plan_host[:needed], device_plan[:needed])
        rows = int(self.plan_host[4])
        partial_o, partial_lse = self.partial_views(rows, num_qo_heads, head_dim)
        return BatchPlan(device_plan, partial_o, partial_lse, self.split_counters, kv_lens.size,
                         int(qo_indptr_np[-1]))
