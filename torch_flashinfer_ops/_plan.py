"""plan(): schedules a batch on the host and writes the schedule to the device.

What a wrapper keeps on the device, fixed for its lifetime so a captured graph keeps valid
addresses:

    plan_info       int32, the wrapper's own (csrc/include/plan_info.h); plan() rewrites it
    split_counters  int32, the wrapper's own, zero between runs: arrival counters, then (NVIDIA)
                    the merge words of batch 1's launches
    partial_lse     float32 [rows, num_qo_heads], the wrapper's own
    partial_o       float32 [rows, num_qo_heads, head_dim], the user's float workspace buffer

The schedule lives with the wrapper, so wrappers may share one workspace buffer, as serving
engines share FlashInfer's between their prefill and decode wrappers: the workspace holds only
what a run writes and reads back within itself. And no two tensors that a run writes share a
storage: torch.compile would otherwise copy that storage from its start up to one of them, and
back, around every call (it mutates in place only a written tensor whose storage no other
written tensor shares).

Split-KV partial results only exist for requests the planner splits. On the GPU, batch decode
counts the arrivals of each split request's tasks in split_counters so that the last one merges
the splits in the same launch; or, where one launch holds every task at once (the tensor-core
kernel's wide shape on NVIDIA, batch 1's splits), the splits store their results as words after
the counters, which every split's block polls to merge its share of the outputs
(csrc/hip/kernels/decode/split_merge.h). The kernel leaves counters and words at zero, and they
are allocated zeroed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from . import _C

if TYPE_CHECKING:
    from ._upload import Upload

_ALIGN = 256
_COUNTERS = _C.SPLIT_COUNTER_SLOTS  # split counters: (request, kv head, head slice) groups merged in the launch
# Merge words a multiprocessor (split_merge.h): a wide launch's task (one a multiprocessor) stores
# a word per query head and dimension, 16 x 128 at most for GQA groups of up to 16 at head_dim
# 128 (8 at 256); a launch that needs more merges by its counters.
_MERGE_WORDS_PER_SM = 16 * 128


def _split_counter_entries(device: torch.device) -> int:
    """int32 entries of a wrapper's split_counters: the counters, then on NVIDIA GPUs the merge
    words of a launch of one block a multiprocessor (two int32 a word)."""
    if device.type != "cuda" or torch.version.hip is not None:
        return _COUNTERS
    return _COUNTERS + 2 * _MERGE_WORDS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count

# Tile rows per work item, by platform. The CPU kernel takes any value; 32 keeps the
# per-task scratch small while amortising K/V conversion over the GQA group.
# On the GPU a CTA of the fa2 prefill kernel takes 128 (NVIDIA; 64 at head_dim 256) / 64 (AMD)
# query rows of one kv head (PrefillPolicy::kTileRows), the GQA group's rows packed together, so
# an item covers that many rows / group tokens.
Q_TILE_ROWS = {"cpu": 32, "cuda": 128, "rocm": 64}


def q_tile_tokens(platform: str, num_qo_heads: int, num_kv_heads: int, head_dim: int = 128) -> int:
    """Tokens per work item: on the GPU, one CTA's rows shared by the GQA group."""
    rows = Q_TILE_ROWS.get(platform, 64)
    if platform == "cpu":
        return rows
    if head_dim > 128:
        rows = min(rows, 64)
    return max(1, rows // max(1, num_qo_heads // max(1, num_kv_heads)))


# The kv split policy and its constants live in csrc/cpu/plan_host.cpp (plan() runs it there,
# in the same call as the schedule); they are exported for tests and tools.
MIN_KV_CHUNK = _C.MIN_KV_CHUNK
DECODE_TASK_COST = _C.DECODE_TASK_COST
DECODE_MIN_KV_CHUNK = _C.DECODE_MIN_KV_CHUNK
DECODE_BLOCKS_PER_SM = _C.DECODE_BLOCKS_PER_SM
DECODE_SPLIT_GAIN = _C.DECODE_SPLIT_GAIN
DECODE_ROUND_FILL_GAIN = _C.DECODE_ROUND_FILL_GAIN
DECODE_MERGE_ROWS_IN_FLIGHT = _C.DECODE_MERGE_ROWS_IN_FLIGHT
DECODE_MERGE_GROUP_COST = _C.DECODE_MERGE_GROUP_COST
DECODE_MERGE_GROUP_COST_CUDA_CORES = _C.DECODE_MERGE_GROUP_COST_CUDA_CORES


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _workers(platform: str) -> int:
    """Concurrent tasks worth filling: CPU threads, or the current GPU's multiprocessors."""
    if platform == "cpu":
        return torch.get_num_threads()
    if torch.cuda.is_available():
        return _multiprocessors(torch.cuda.current_device())
    return 132


DECODE_KERNEL_NOT_MEASURED = _C.DECODE_KERNEL_NOT_MEASURED
DECODE_KERNEL_CUDA_CORES_16BIT = _C.DECODE_KERNEL_CUDA_CORES_16BIT
DECODE_KERNEL_CUDA_CORES_FP8 = _C.DECODE_KERNEL_CUDA_CORES_FP8
DECODE_KERNEL_TENSOR_CORES_16BIT = _C.DECODE_KERNEL_TENSOR_CORES_16BIT
DECODE_KERNEL_TENSOR_CORES_FP8 = _C.DECODE_KERNEL_TENSOR_CORES_FP8


def decode_kernel(platform: str, kv_dtype: torch.dtype, use_tensor_cores: bool) -> int:
    """Which decode kernel a plan is for (a DECODE_KERNEL_* value), as plan()'s measured rules
    know them (the stream deal's, csrc/cpu/plan_host.cpp streams_pay, and the bandwidth bound,
    csrc/cpu/attention_cpu.h bandwidth_bound, which _C.decode_bandwidth_bound reads): those are
    NVIDIA measurements, so another platform's kernels are DECODE_KERNEL_NOT_MEASURED and keep
    the default deal and split."""
    if platform != "cuda":
        return DECODE_KERNEL_NOT_MEASURED
    fp8 = kv_dtype.itemsize == 1
    if use_tensor_cores:
        return DECODE_KERNEL_TENSOR_CORES_FP8 if fp8 else DECODE_KERNEL_TENSOR_CORES_16BIT
    return DECODE_KERNEL_CUDA_CORES_FP8 if fp8 else DECODE_KERNEL_CUDA_CORES_16BIT


def choose_kv_chunk_size(platform: str, qo_lens: np.ndarray, kv_lens: np.ndarray,
                         num_kv_heads: int, q_tile_rows: int, decode_grid: int = 0, prefill_grid: int = 0,
                         causal: bool = False, window_left: int = -1,
                         decode_kernel: int = DECODE_KERNEL_NOT_MEASURED, decode_wide_tasks: int = 0,
                         decode_task_blocks: bool = True, decode_four_block_grid: int = 0) -> int:
    """0 (no split) unless splitting requests gives the workers a fuller or better balanced load
    (the policy of csrc/cpu/plan_host.cpp, which plan() runs). decode_grid / prefill_grid: the
    blocks of the persistent decode / prefill grid, when the caller knows them.
    decode_kernel: which decode kernel the plan is for (decode_kernel()), whose bandwidth bound
    (_C.decode_bandwidth_bound: the full memory bandwidth from two blocks per multiprocessor)
    the decode cost model takes. decode_wide_tasks: the most tasks for which the launch takes the
    tensor-core kernel's wide shape (_ops.decode_wide_tasks; 0: none), which the policy then
    prefers where it costs at most twice the chunk. decode_task_blocks: the launch
    takes the plan's size (eager runs); False where it runs the whole resident grid whatever the
    plan (CUDA-graph wrappers), whose blocks take the tasks in turn. decode_four_block_grid: the
    kernel's launch at four blocks per multiprocessor (_ops.decode_four_block_grid; 0: none):
    the tensor-core kernel keeps equal FP8 tasks unsplit where that launch runs them in rounds
    filled to at least 15/16: within three rounds of the default grid, or past them up to four
    rounds of its own of tasks of at most 4096 rows (plan_host.cpp, four_block_unsplit)."""
    qo_indptr = np.zeros(len(qo_lens) + 1, dtype=np.int32)
    np.cumsum(qo_lens, out=qo_indptr[1:])
    kv = torch.from_numpy(np.ascontiguousarray(kv_lens, dtype=np.int32))
    return int(_C.choose_kv_chunk_size(platform != "cpu", torch.from_numpy(qo_indptr), kv, num_kv_heads,
                                       q_tile_rows, _workers(platform), decode_grid, prefill_grid, causal,
                                       window_left, decode_wide_tasks, decode_task_blocks, decode_kernel,
                                       decode_four_block_grid))


@dataclasses.dataclass
class BatchPlan:
    plan_info: torch.Tensor  # int32, the wrapper's, on the workspace's device
    partial_o: torch.Tensor  # float32 view of the workspace
    partial_lse: torch.Tensor  # float32, the wrapper's
    split_counters: torch.Tensor  # int32, the wrapper's, zero between runs
    batch_size: int
    total_qo: int
    task_blocks: int = 0  # GPU decode: the blocks its launch deals the tasks over (0: the whole grid)


class Workspace:
    """A wrapper's plan buffers, and its split-KV partial outputs in the user's workspace."""

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
        # The plan: as large as a quarter of the workspace, at most 8 MiB (upstream's int
        # workspace). The split counters: one per (request, kv head, head slice), up to 64Ki; on
        # NVIDIA GPUs the merge words after them (2.1 MiB on a 132-multiprocessor H100).
        self.plan_bytes = min(8 << 20, (total // 4) // _ALIGN * _ALIGN)
        self.plan_host = torch.empty(self.plan_bytes // 4, dtype=torch.int32)  # host scratch
        self._plan_view = torch.empty(self.plan_bytes // 4, dtype=torch.int32, device=self.bytes.device)
        # Static for cudagraphs (torch.compile's "reduce-overhead"): its address never changes and
        # plan() rewrites it in place, so a replay reads it where it is instead of first copying
        # all of it (up to 8 MiB) into the graph's own input.
        torch._dynamo.mark_static_address(self._plan_view)
        self.split_counters = torch.zeros(_split_counter_entries(self.bytes.device), dtype=torch.int32,
                                          device=self.bytes.device)
        torch._dynamo.mark_static_address(self.split_counters)
        self._partials = {}  # (num_qo_heads, head_dim) -> (partial_o, partial_lse)

    @property
    def device(self) -> torch.device:
        return self.buffer.device

    def plan_view(self) -> torch.Tensor:
        return self._plan_view

    def partial_capacity(self, num_qo_heads: int, head_dim: int) -> int:
        """The split-KV partial rows the float workspace holds."""
        return self.bytes.numel() // (4 * num_qo_heads * head_dim)

    def partial_views(self, rows: int, num_qo_heads: int, head_dim: int):
        """Fixed views for the split-KV partial results: the same tensor objects for every
        plan of one head configuration, so compiled graphs see the same inputs. They are
        marked as static addresses: run() writes them, and a cudagraph (torch.compile's
        "reduce-overhead") may only mutate inputs whose address never changes."""
        capacity_rows = self.partial_capacity(num_qo_heads, head_dim)
        if rows > capacity_rows:
            raise ValueError(
                f"float_workspace_buffer ({self.bytes.numel()} bytes) is too small for the split-KV "
                f"partial results of this batch ({rows} rows; it holds {capacity_rows})"
            )
        key = (num_qo_heads, head_dim)
        if key not in self._partials:
            capacity_rows = max(capacity_rows, 1)
            o_bytes = capacity_rows * num_qo_heads * head_dim * 4
            partial_o = self.bytes[:o_bytes].view(torch.float32)
            partial_lse = torch.empty(capacity_rows * num_qo_heads, dtype=torch.float32, device=self.bytes.device)
            for t in (partial_o, partial_lse):
                torch._dynamo.mark_static_address(t)
            self._partials[key] = (partial_o, partial_lse)
        return self._partials[key]

    def plan(self, platform: str, qo_indptr_host: Optional[torch.Tensor], kv_lens_host: torch.Tensor,
             num_qo_heads: int, num_kv_heads: int, head_dim: int,
             kv_chunk_size: int | None = None, decode_grid: int = 0, *, upload: Upload,
             work_lists: int = 0, causal: bool = False, window_left: int = -1,
             page_indptr_host: Optional[torch.Tensor] = None, decode_wide_tasks: int = 0,
             decode_task_blocks: bool = True, decode_four_block_grid: int = 0,
             decode_kernel: int = DECODE_KERNEL_NOT_MEASURED) -> BatchPlan:
        """Schedules the batch on the host (one call into plan_host.cpp) and queues the schedule's
        copy on `upload`. qo_indptr_host None: one query row per request (decode). work_lists:
        the blocks of the GPU prefill grid, whose per-block work lists the schedule then carries
        (costed by causal and window_left; csrc/cpu/work_lists.cpp). decode_wide_tasks,
        decode_task_blocks: see choose_kv_chunk_size. page_indptr_host: a paged cache's kv_indptr
        (host int32), which the schedule carries for the decode kernels (csrc/include/plan_info.h,
        kPageBase).
        decode_four_block_grid: the launch at four blocks per multiprocessor that run() takes where
        the plan asks for it (_ops.decode_four_block_grid; 0: none). decode_kernel: which kernel
        the plan is for (decode_kernel()), for its bandwidth bound (see choose_kv_chunk_size) and
        the stream deal's rule."""
        q_tile_rows = q_tile_tokens(platform, num_qo_heads, num_kv_heads, head_dim)

        def schedule(chunk: int):
            # Raises ValueError, before writing anything, when the plan buffer is too small.
            return _C.plan_host(
                _EMPTY if qo_indptr_host is None else qo_indptr_host, kv_lens_host, self.plan_host, q_tile_rows,
                num_kv_heads, _workers(platform), decode_grid, chunk, platform != "cpu", work_lists, causal,
                window_left, _EMPTY if page_indptr_host is None else page_indptr_host,
                decode_wide_tasks, decode_task_blocks, decode_four_block_grid, decode_kernel)

        valid, _, needed, rows, total_qo = schedule(-1 if kv_chunk_size is None else kv_chunk_size)
        if not valid:
            raise ValueError("plan: qo_indptr must start at 0 and be non-decreasing, with batch_size + 1 entries")
        if kv_chunk_size is None and rows > self.partial_capacity(num_qo_heads, head_dim):
            # The policy splits only for speed: with a workspace too small for the split's partial
            # results, the batch runs unsplit rather than failing.
            valid, _, needed, rows, total_qo = schedule(0)
        # Only the prefix a run reads travels, with the index arrays (upload.send(), by the caller).
        device_plan = self.plan_view()
        upload.add(self.plan_host[:needed], device_plan[:needed])
        partial_o, partial_lse = self.partial_views(rows, num_qo_heads, head_dim)
        task_blocks = int(self.plan_host[_TASK_BLOCKS])
        return BatchPlan(device_plan, partial_o, partial_lse, self.split_counters, kv_lens_host.numel(), total_qo,
                         task_blocks)


_EMPTY = torch.empty(0, dtype=torch.int32)
_TASK_BLOCKS = 7  # plan_info header field (csrc/include/plan_info.h)
