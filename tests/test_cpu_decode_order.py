"""The order of GPU decode plans' items (csrc/cpu/decode_order.cpp): the decode kernels' persistent
grid takes tasks (item, kv head) in turn, so the item order decides each block's load. Host only.
What is checked: the items are those of the request-order schedule, permuted; uneven batches
load the blocks evenly under the grid's rotation (costs: each item's kv rows plus the task cost
the planner uses); even batches and one-round batches keep the request order. The GPU tier and
the AMD emulated tier run the kernels on such plans against the reference."""

import numpy as np
import pytest
import torch

from plan_layout import KV_BEGIN, KV_END, items as _items
from torch_flashinfer_ops import _C, _ops

GRID, HEADS = 396, 8  # an H200's decode grid (132 SMs x 3 blocks), 8 kv heads


def _decode_plan(kv_lens, *, gpu=True, grid=GRID, chunk=-1):
    kv = torch.tensor(kv_lens, dtype=torch.int32)
    plan = torch.full((1 << 16,), -7, dtype=torch.int32)
    valid, chosen, needed, _, _ = _C.plan_host(torch.empty(0, dtype=torch.int32), kv, plan, 16, HEADS, 132, grid,
                                               chunk, gpu, 0, False, -1)
    assert valid
    return plan[:needed].numpy().copy(), chosen


def _request_order(kv_lens, chunk):
    """The schedule in request order (plan_batch, which never reorders)."""
    plan = torch.full((1 << 16,), -7, dtype=torch.int32)
    qo = torch.arange(len(kv_lens) + 1, dtype=torch.int32)
    _ops.ops.plan_batch(qo, torch.tensor(kv_lens, dtype=torch.int32), plan, 16, chunk)
    return plan.numpy().copy()


def _block_loads(items, grid=GRID):
    """Block loads under the kernels' rotation: task t = item * HEADS + head runs on block t % grid."""
    cost = items[:, KV_END] - items[:, KV_BEGIN] + int(_C.DECODE_TASK_COST)
    loads = np.zeros(grid)
    np.add.at(loads, np.arange(len(items) * HEADS) % grid, np.repeat(cost, HEADS))
    return loads


def _slowest_over_mean(items):
    loads = _block_loads(items)
    return loads.max() / loads.mean()


@pytest.mark.parametrize("batch", [128, 256, 512])
def test_uneven_batches_load_the_blocks_evenly(batch):
    rng = np.random.default_rng(batch)
    kv_lens = rng.integers(64, 8193, batch).tolist()
    plan, chunk = _decode_plan(kv_lens)
    items = _items(plan)
    before = _items(_request_order(kv_lens, chunk))
    # The same items (rows of the request-order schedule), permuted.
    assert sorted(map(tuple, items)) == sorted(map(tuple, before))
    ordered, in_turn = _slowest_over_mean(items), _slowest_over_mean(before)
    assert ordered < 1.2 and ordered < 0.8 * in_turn, (ordered, in_turn)


def test_even_batches_and_host_plans_keep_the_request_order():
    kv_lens = [4096] * 128  # every benchmark shape: equal lengths
    plan, chunk = _decode_plan(kv_lens)
    np.testing.assert_array_equal(_items(plan), _items(_request_order(kv_lens, chunk)))
    uneven = np.random.default_rng(0).integers(64, 8193, 128).tolist()
    plan, chunk = _decode_plan(uneven, gpu=False)  # the CPU path runs items in any order itself
    np.testing.assert_array_equal(_items(plan), _items(_request_order(uneven, chunk)))


def test_one_round_keeps_the_request_order():
    kv_lens = [100, 3000, 7000, 50, 4000, 900, 2500, 6100] * 4  # 32 requests x 8 heads <= 396 tasks
    plan, chunk = _decode_plan(kv_lens, chunk=0)
    assert len(_items(plan)) * HEADS <= GRID
    np.testing.assert_array_equal(_items(plan), _items(_request_order(kv_lens, chunk)))


def test_split_requests_keep_their_partial_rows():
    # Long requests split into chunks: each chunk's partial row still names its own request and
    # kv range, wherever the chunk lands in the order.
    kv_lens = [32768, 64, 5000, 128] * 40
    plan, chunk = _decode_plan(kv_lens, chunk=2048)
    assert chunk == 2048
    items = _items(plan)
    before = _items(_request_order(kv_lens, chunk))
    assert sorted(map(tuple, items)) == sorted(map(tuple, before))
    assert not np.array_equal(items, before)
    assert _slowest_over_mean(items) < _slowest_over_mean(before)


@pytest.mark.parametrize("batch", [128, 256, 512])
def test_heavy_tailed_batches_split_their_longest_requests(batch):
    # Log-normal kv lengths (median ~1.1k, up to 32k): the longest tasks exceed a block's share,
    # so plan() splits them (plan_host.cpp's balancing_decode_chunk) and the order spreads the rest.
    rng = np.random.default_rng(batch)
    kv_lens = np.minimum(32768, rng.lognormal(7.0, 1.0, batch).astype(int) + 1).tolist()
    plan, chunk = _decode_plan(kv_lens)
    assert 0 < chunk < max(kv_lens)
    loads = _block_loads(_items(plan))
    unsplit_mean = (np.array(kv_lens) + int(_C.DECODE_TASK_COST)).sum() * HEADS / GRID
    in_turn = _slowest_over_mean(_items(_request_order(kv_lens, 0)))
    assert loads.max() / unsplit_mean < 1.25 < in_turn, (loads.max() / unsplit_mean, in_turn)


@pytest.mark.parametrize("batch,kv_len", [(128, 1024), (256, 4096), (512, 2048)])
def test_equal_lengths_over_two_rounds_are_not_split(batch, kv_len):
    # Nothing to balance, and no split fills the last round by enough (long equal tasks are
    # split for that: test_cpu_split_policy.py's round-filling tests).
    _, chunk = _decode_plan([kv_len] * batch)
    assert chunk == 0


def test_equal_long_lengths_split_to_fill_the_last_round_keep_an_even_turn():
    plan, chunk = _decode_plan([16384] * 128)  # 1024 tasks: 2.6 rounds; split in 3, 7.8 rounds
    assert chunk == 5504
    loads = _block_loads(_items(plan))
    assert loads.max() / loads.mean() < 1.15, loads.max() / loads.mean()
