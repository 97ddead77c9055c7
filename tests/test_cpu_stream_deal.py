"""The stream deal of GPU decode plans (csrc/cpu/decode_order.cpp, stream_decode_items; the rule
that takes it, plan_host.cpp's streams_pay). Host only: the streams cover every request's rows
once, in order, with about equal rows a stream; a request cut by streams is split with its own
partial rows; the launch's strided deal gives each stream's pieces to one group of kv-head
blocks, in row order. The GPU tier runs the kernels on such plans against the reference."""

import numpy as np
import pytest
import torch

from plan_layout import (KV_BEGIN, KV_END, KV_LEN, NUM_SPLITS, PARTIAL_BASE, PARTIAL_ROW, PARTIAL_ROWS, REQUEST,
                         TASK_BLOCKS, items, requests)
from torch_flashinfer_ops import _C

GRID, HEADS = 396, 8
CC16, CC8 = _C.DECODE_KERNEL_CUDA_CORES_16BIT, _C.DECODE_KERNEL_CUDA_CORES_FP8
TC16, TC8 = _C.DECODE_KERNEL_TENSOR_CORES_16BIT, _C.DECODE_KERNEL_TENSOR_CORES_FP8


def _plan(kv_lens, *, kernel=_C.DECODE_KERNEL_NOT_MEASURED, four=0, task_blocks=True, heads=HEADS, grid=GRID):
    """plan_host's decode plan for `kernel` as plan() passes it on the H100: the tensor-core kernels
    with their wide shape (132 tasks), the bandwidth bound on 16-bit caches; four: the kernel's
    four-block grid (0: none)."""
    tensor_cores = kernel in (TC16, TC8)
    plan = torch.full((1 << 16,), -7, dtype=torch.int32)
    valid, _, needed, rows, _ = _C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor(kv_lens, dtype=torch.int32),
                                             plan, 16, heads, 132, grid, -1, True, 0, False, -1,
                                             decode_wide_tasks=132 if tensor_cores else 0,
                                             decode_task_blocks=task_blocks, decode_four_block_grid=four,
                                             decode_kernel=kernel)
    assert valid
    return plan.numpy().copy(), rows


def _is_stream(plan, heads=HEADS, grid=GRID):
    return int(plan[TASK_BLOCKS]) == grid // heads * heads and int(plan[PARTIAL_ROWS]) > 0


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("TFO_DECODE_STREAM", "1")


@pytest.mark.parametrize("kv_lens", [[1024] * 64, [1024] * 256, [4096] * 50, [1000] * 60 + [1064] * 20,
                                     list(np.random.RandomState(3).randint(960, 1024, 77))])
def test_streams_cover_every_row_once_in_equal_shares(forced, kv_lens):
    plan, rows = _plan(kv_lens)
    assert _is_stream(plan)
    it, req = items(plan), requests(plan)
    groups = int(plan[TASK_BLOCKS]) // HEADS
    for r, n in enumerate(kv_lens):  # every request's rows once, its pieces back to back
        mine = it[it[:, REQUEST] == r]
        spans = sorted(zip(mine[:, KV_BEGIN].tolist(), mine[:, KV_END].tolist()))
        assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert (mine[:, KV_LEN] == n).all() and req[r, NUM_SPLITS] == len(spans)
        if len(spans) == 1:
            assert req[r, PARTIAL_BASE] == -1 and mine[0, PARTIAL_ROW] == -1
        else:  # its own partial rows, one a piece
            assert sorted(mine[:, PARTIAL_ROW].tolist()) == list(range(req[r, PARTIAL_BASE],
                                                                       req[r, PARTIAL_BASE] + len(spans)))
    assert rows == int(plan[PARTIAL_ROWS]) == sum(int(s) for s in req[:, NUM_SPLITS] if s > 1)
    # The strided deal: item i runs on block group i % groups; a group's pieces follow each other
    # in the rows laid end to end, and the groups' rows differ by at most a tile's cut each side.
    starts = np.concatenate([[0], np.cumsum(kv_lens)])
    share = np.zeros(groups, dtype=np.int64)
    first, last_end = {}, {}
    for i, row in enumerate(it.tolist()):
        g = i % groups
        at = starts[row[REQUEST]] + row[KV_BEGIN]
        assert last_end.get(g, at) == at, "a group's pieces are consecutive rows"
        first.setdefault(g, at)
        last_end[g] = starts[row[REQUEST]] + row[KV_END]
        share[g] += row[KV_END] - row[KV_BEGIN]
    assert share.sum() == sum(kv_lens)
    # Streams in row order, each cut within a tile (64 rows) of its equal share's place.
    cuts = sorted(first.values())
    assert cuts[0] == 0 and all(a < b for a, b in zip(cuts, cuts[1:]))
    assert max(abs(c - k * sum(kv_lens) // groups) for k, c in enumerate(cuts)) <= 64


def test_the_last_round_is_a_prefix_of_the_groups(forced):
    plan, _ = _plan([1024] * 64)
    groups = int(plan[TASK_BLOCKS]) // HEADS
    n = int(plan[0])
    assert groups < n < 4 * groups  # 49 streams of ~1337 rows: two or three pieces each


def test_a_layout_that_does_not_hold_keeps_the_policys_split(forced, monkeypatch):
    # A few long requests among many short: streams inside the long ones hold one piece, those
    # over the short ones several, so the streams are not taken, and the policy splits the long.
    kv_lens = [8000] * 8 + [200] * 200
    plan, rows = _plan(kv_lens)
    assert not _is_stream(plan) and rows > 0
    monkeypatch.setenv("TFO_DECODE_STREAM", "0")
    assert (plan == _plan(kv_lens)[0]).all()


@pytest.mark.parametrize("kv_lens", [[1024] * 40, [1024] * 49, [30] * 200, [1024] * 63 + [0],
                                     [700] * 90 + [1300] * 10])
def test_where_the_deal_does_not_apply_the_plan_is_the_default(forced, monkeypatch, kv_lens):
    """One round or less, requests under a tile's cut, an empty request, streams of piece counts
    two apart (the rounds would not be a prefix): the usual plan."""
    plan, _ = _plan(kv_lens)
    monkeypatch.setenv("TFO_DECODE_STREAM", "0")
    assert (plan == _plan(kv_lens)[0]).all()


@pytest.mark.parametrize("kernel, four, taken", [
    (CC16, 528, True),    # CUDA cores on a 16-bit cache with its four-block grid (the 4-row tile)
    (CC16, 0, False),     # other tiles (no four-block grid), as measured
    (TC8, 0, True),       # tensor cores on an FP8 cache
    (TC16, 0, False),     # tensor cores on a 16-bit cache: a block per task
    (CC8, 0, False),      # CUDA cores on an FP8 cache
    (_C.DECODE_KERNEL_NOT_MEASURED, 528, False),  # another platform's kernels: the default deal
])
def test_the_rule_takes_the_streams_for_the_kernels_they_pay_for(kernel, four, taken):
    assert _is_stream(_plan([1024] * 128, kernel=kernel, four=four)[0]) == taken


def test_tensor_cores_on_fp8_take_streams_past_two_rounds_only():
    # Between one and two rounds their default (two tasks a block) measured faster.
    assert not _is_stream(_plan([1024] * 64, kernel=TC8)[0])
    assert int(_plan([1024] * 64, kernel=TC8)[0][TASK_BLOCKS]) == 256
    assert _is_stream(_plan([1024] * 100, kernel=TC8)[0])  # 800 tasks on 396 blocks
    assert _is_stream(_plan([1024] * 64, kernel=CC16, four=528)[0])  # CUDA cores on 16-bit caches: from one round


def test_tensor_cores_on_fp8_with_head_columns_take_their_grid_up_to_three_rounds():
    # The head-column kernel's four-block grid (528): up to three rounds of the default grid its
    # deal (a task a block within its own round), streams past them.
    for batch in (64, 100, 148):  # 512, 800 and 1184 tasks on 396 blocks
        plan = _plan([1024] * batch, kernel=TC8, four=528)[0]
        assert not _is_stream(plan) and int(plan[TASK_BLOCKS]) == 528 and int(plan[PARTIAL_ROWS]) == 0
    assert _is_stream(_plan([1024] * 149, kernel=TC8, four=528)[0])  # 1192 tasks: past three rounds


def test_tensor_cores_on_fp8_keep_four_filled_rounds_of_their_grid_unsplit():
    # Past three default rounds, equal tasks of up to 4096 rows that fill up to four rounds of the
    # four-block grid to 15/16 (batch 186-198 and 248-264 x 8 kv heads on 528) keep it, unsplit;
    # the rest take streams.
    for batch, kv in ((186, 1024), (198, 1024), (248, 1024), (256, 1024), (264, 1024), (256, 4096)):
        plan = _plan([kv] * batch, kernel=TC8, four=528)[0]
        assert not _is_stream(plan) and int(plan[TASK_BLOCKS]) == 528 and int(plan[PARTIAL_ROWS]) == 0
    for batch in (150, 185, 199, 247, 265, 512):  # rounds filled less, or more than four
        assert _is_stream(_plan([1024] * batch, kernel=TC8, four=528)[0])
    assert _is_stream(_plan([4097] * 256, kernel=TC8, four=528)[0])  # longer tasks
    assert _is_stream(_plan([1024] * 128 + [1000] * 128, kernel=TC8, four=528)[0])  # unequal lengths
    assert _is_stream(_plan([1024] * 256, kernel=CC16, four=528)[0])  # another kernel with the grid
    assert not _is_stream(_plan([1024] * 256, kernel=TC8, four=528, task_blocks=False)[0])
    assert int(_plan([1024] * 256, kernel=TC8, four=528, task_blocks=False)[0][TASK_BLOCKS]) == 0


def test_an_unknown_kernel_value_is_refused():
    with pytest.raises(RuntimeError, match="decode_kernel"):
        _plan([1024] * 64, kernel=TC8 + 1)


@pytest.mark.parametrize("kv_lens", [[256] * 128, [600] * 64 + [1024] * 64])
def test_the_rule_leaves_short_or_uneven_requests_to_the_default(kv_lens):
    assert not _is_stream(_plan(kv_lens, kernel=CC16, four=528)[0])


def test_launches_of_the_whole_grid_and_the_off_switch_keep_the_default(monkeypatch):
    assert _is_stream(_plan([1024] * 128, kernel=CC16, four=528)[0])
    assert not _is_stream(_plan([1024] * 128, kernel=CC16, four=528, task_blocks=False)[0])
    monkeypatch.setenv("TFO_DECODE_STREAM", "0")
    assert not _is_stream(_plan([1024] * 128, kernel=CC16, four=528)[0])
    monkeypatch.setenv("TFO_DECODE_STREAM", "yes")
    with pytest.raises(RuntimeError, match="TFO_DECODE_STREAM"):
        _plan([1024] * 128)


def test_plan_names_the_kernel_from_the_platform_the_cache_and_the_switch():
    from torch_flashinfer_ops._plan import decode_kernel
    assert decode_kernel("cuda", torch.float16, False) == CC16 and decode_kernel("cuda", torch.bfloat16, False) == CC16
    assert decode_kernel("cuda", torch.float8_e4m3fn, False) == CC8
    assert decode_kernel("cuda", torch.bfloat16, True) == TC16
    assert decode_kernel("cuda", torch.float8_e5m2, True) == TC8
    for platform in ("rocm", "cpu"):  # the deal's rules are NVIDIA measurements
        assert decode_kernel(platform, torch.float8_e4m3fn, True) == _C.DECODE_KERNEL_NOT_MEASURED
