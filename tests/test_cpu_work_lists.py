"""The work lists of GPU prefill plans (csrc/cpu/work_lists.cpp): which block of the persistent
grid runs which (work item, kv head). Host only; runs everywhere. What is checked: every pair is
in exactly one list, the plan prefix a run reads holds the lists, and the blocks' loads are
balanced, measured with costs derived here from the attention masks themselves (the kv rows any
query row of an item sees), against the grid's own rotation. The AMD emulated tier and the GPU
tier run the kernels on such plans against the reference."""

import numpy as np
import pytest
import torch

from plan_layout import HEADER, ITEM_FIELDS, NUM_LISTS, NUM_ITEMS, REQUEST_FIELDS, items as _items, lists_start
from torch_flashinfer_ops import _C, _ops

FIXED_ROWS = 128  # a unit's fixed cost in kv rows, as work_lists.cpp counts it
BUCKET_ROWS = 32  # its least-loaded pick is exact to within this many rows


def _plan(qo_lens, kv_lens, heads, lists, *, causal, window_left=-1, q_tile=32, chunk=0, capacity=1 << 18):
    qo_indptr = torch.tensor(np.concatenate([[0], np.cumsum(qo_lens)]), dtype=torch.int32)
    kv = torch.tensor(kv_lens, dtype=torch.int32)
    plan = torch.full((capacity,), -7, dtype=torch.int32)
    valid, _, needed, _, _ = _C.plan_host(qo_indptr, kv, plan, q_tile, heads, 132, 0, chunk, True, lists, causal,
                                          window_left)
    assert valid
    return plan[:needed].numpy().copy(), needed


def _lists(plan, heads):
    """[(entries of list b)] for b < num_lists, each entry (item, kv head)."""
    num_lists = int(plan[NUM_LISTS])
    start = lists_start(plan)
    offsets = plan[start : start + num_lists + 1]
    entries = plan[start + num_lists + 1 :]
    return [[divmod(int(e), heads) for e in entries[offsets[b] : offsets[b + 1]]] for b in range(num_lists)]


def _visible_rows(item, qo_lens, kv_lens, causal, window_left):
    """The kv rows the kernel streams for an item: the span of the positions in [kv_begin,
    kv_end) that some query row of the item may attend to, from the masks row by row."""
    r, q0, q1, kv0, kv1 = (int(x) for x in item[:5])
    qo_len, kv_len = qo_lens[r], kv_lens[r]
    kv = np.arange(kv0, min(kv1, kv_len))
    seen = np.zeros(kv.size, dtype=bool)
    for t in range(q0, q1):
        pos = t + kv_len - qo_len
        ok = np.ones(kv.size, dtype=bool)
        if causal:
            ok &= kv <= pos
        if window_left >= 0:
            ok &= kv >= pos - window_left
        seen |= ok
    return int(kv[seen].max() - kv[seen].min() + 1) if seen.any() else 0


def _costs(plan, qo_lens, kv_lens, causal, window_left=-1):
    return [_visible_rows(it, qo_lens, kv_lens, causal, window_left) + FIXED_ROWS for it in _items(plan)]


def _rotation_loads(costs, heads, grid):
    """Per-block loads without lists: block b runs units b, b + grid, ... (one unit per item and
    kv head, in item order)."""
    loads = np.zeros(grid)
    for unit in range(len(costs) * heads):
        loads[unit % grid] += costs[unit // heads]
    return loads


def _list_loads(plan, costs, heads):
    return np.array([sum(costs[i] for i, _ in lst) for lst in _lists(plan, heads)], dtype=float)


BATCHES = {
    "16x1k": ([1024] * 16, [1024] * 16),
    "4x4k": ([4096] * 4, [4096] * 4),
    "uneven": ([100, 3000, 512, 2048, 50, 700, 1500, 4000], [100, 3000, 512, 2048, 50, 700, 1500, 4000]),
    "append": ([7, 300, 64, 1], [2000, 300, 1100, 64]),  # qo shorter than kv: causal aligned to the end
}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("heads,grid", [(8, 264), (32, 264), (2, 7)])
def test_every_pair_is_in_exactly_one_list(batch, heads, grid):
    qo, kv = BATCHES[batch]
    plan, needed = _plan(qo, kv, heads, grid, causal=True)
    assert plan[NUM_LISTS] == grid
    items = _items(plan)
    lists = _lists(plan, heads)
    pairs = sorted(p for lst in lists for p in lst)
    assert pairs == [(i, h) for i in range(len(items)) for h in range(heads)]
    size = HEADER + REQUEST_FIELDS * len(qo) + ITEM_FIELDS * len(items) + grid + 1 + heads * len(items)
    assert needed == size  # the prefix a run reads ends with the lists
    assert not (plan == -7).any()


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("heads", [8, 32])
def test_causal_lists_balance_the_grid(batch, heads):
    """List scheduling: the slowest block carries at most the mean plus one unit (and a bucket);
    the grid's own rotation is measured beside it."""
    grid = 264
    qo, kv = BATCHES[batch]
    plan, _ = _plan(qo, kv, heads, grid, causal=True)
    costs = _costs(plan, qo, kv, causal=True)
    loads = _list_loads(plan, costs, heads)
    mean = sum(costs) * heads / grid
    assert loads.max() <= mean + max(costs) + BUCKET_ROWS
    rotation = _rotation_loads(costs, heads, grid)
    assert loads.max() <= rotation.max()
    if batch == "16x1k" and heads == 8:
        # Block b of the rotation takes q tiles b / 8 .. b / 8 + 15 of successive requests.
        assert rotation.max() / mean > 1.3
        assert loads.max() / mean < 1.06


def test_lists_follow_the_window_and_the_split():
    qo, kv = [900, 40, 2500], [900, 3000, 2500]
    heads, grid = 4, 50
    plan, _ = _plan(qo, kv, heads, grid, causal=True, window_left=300, chunk=512)
    assert plan[NUM_LISTS] == grid
    costs = _costs(plan, qo, kv, causal=True, window_left=300)
    loads = _list_loads(plan, costs, heads)
    assert loads.max() <= sum(costs) * heads / grid + max(costs) + BUCKET_ROWS


def test_each_block_runs_its_longest_units_first_within_a_request():
    qo = kv = [2048, 2048]
    heads, grid = 8, 40
    plan, _ = _plan(qo, kv, heads, grid, causal=True)
    costs = _costs(plan, qo, kv, causal=True)
    items = _items(plan)
    for lst in _lists(plan, heads):
        for request in (0, 1):
            mine = [costs[i] for i, _ in lst if items[i][0] == request]
            assert mine == sorted(mine, reverse=True)


def test_equal_costs_take_no_lists():
    """Non-causal requests of one length: the rotation is balanced already, and plan() skips
    the lists' host work."""
    plan, needed = _plan([1024] * 16, [1024] * 16, 8, 264, causal=False)
    assert plan[NUM_LISTS] == 0
    assert needed == HEADER + REQUEST_FIELDS * 16 + ITEM_FIELDS * plan[NUM_ITEMS]


def test_no_grid_or_no_room_takes_no_lists():
    qo = kv = [1024] * 4
    plan, _ = _plan(qo, kv, 8, 0, causal=True)
    assert plan[NUM_LISTS] == 0
    without = HEADER + REQUEST_FIELDS * 4 + ITEM_FIELDS * 128
    plan, needed = _plan(qo, kv, 8, 264, causal=True, capacity=without + 100)  # the lists need 264 + 1 + 1024
    assert plan[NUM_LISTS] == 0 and needed == without


def test_decode_plans_take_no_lists():
    kv = torch.tensor([900, 40, 2500], dtype=torch.int32)
    plan = torch.zeros(1 << 14, dtype=torch.int32)
    valid, _, needed, _, _ = _C.plan_host(torch.empty(0, dtype=torch.int32), kv, plan, 1, 8, 132, 0, -1, True, 264,
                                          False, -1)
    assert valid and plan[NUM_LISTS] == 0


def test_grid_query_without_gpu_kernels_is_zero():
    if _C.gpu_kernels_built():
        pytest.skip("this build has GPU kernels")
    assert _ops.prefill_grid_blocks(torch.float16, 128, True, False) == 0
