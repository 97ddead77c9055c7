"""The split-KV policy of plan() (host arithmetic in csrc/cpu/plan_host.cpp): when a batch's
requests are split into kv chunks, and that splitting fills the decode grid or balances its
rounds. Host only; runs everywhere. The GPU tier checks the same plans' outputs against the
reference."""

import numpy as np
import pytest
import torch

from plan_layout import KV_CHUNK_SIZE, PARTIAL_ROWS, TASK_BLOCKS
from torch_flashinfer_ops import _C, _ops
from torch_flashinfer_ops._plan import (DECODE_MERGE_GROUP_COST, DECODE_MERGE_GROUP_COST_CUDA_CORES,
                                        DECODE_MERGE_ROWS_IN_FLIGHT, DECODE_MIN_KV_CHUNK,
                                        DECODE_ROUND_FILL_GAIN, DECODE_SPLIT_GAIN, DECODE_TASK_COST, MIN_KV_CHUNK,
                                        _workers, choose_kv_chunk_size, decode_kernel)

GRID = 396  # e.g. 132 multiprocessors x 3 resident blocks
# The blocks that stream at the full bandwidth: the decode cost model's bound.
SATURATING = _C.DECODE_BLOCKS_PER_SM * _workers("cuda")


WIDE = 132  # the wide tensor-core shape: one block per multiprocessor
# The kernel with the bandwidth bound (the tensor cores on 16-bit caches), and one without it
# that takes no stream deal either (the CUDA cores on FP8 caches; streams_pay).
BOUND = _C.DECODE_KERNEL_TENSOR_CORES_16BIT
UNBOUND = _C.DECODE_KERNEL_CUDA_CORES_FP8


def _decode(kv_lens, heads=8, grid=GRID, kernel=BOUND, wide=0):
    """The policy for `kernel`, by default NVIDIA's tensor-core kernel on a 16-bit cache, which has
    the bandwidth bound (wide: the most tasks its wide shape takes, 0 for none)."""
    kv = np.asarray(kv_lens, dtype=np.int64)
    return choose_kv_chunk_size("cuda", np.ones(kv.size, dtype=np.int64), kv, heads, 128, grid,
                                decode_kernel=kernel, decode_wide_tasks=wide)


def _tasks(kv_lens, chunk, heads=8):
    kv = np.asarray(kv_lens, dtype=np.int64)
    if chunk == 0:
        return kv.size * heads
    return int(np.maximum((kv + chunk - 1) // chunk, 1).sum()) * heads


def _fill(tasks, grid=GRID):
    return tasks / (grid * -(-tasks // grid))


def _merge_cost(kv_lens, chunk):
    """A split's merge tail in the decode model: DECODE_MERGE_GROUP_COST per group of
    DECODE_MERGE_ROWS_IN_FLIGHT splits of the longest request."""
    splits = -(-int(np.max(kv_lens)) // chunk)
    return -(-splits // DECODE_MERGE_ROWS_IN_FLIGHT) * DECODE_MERGE_GROUP_COST


def test_batch_one_takes_fewer_splits_than_would_fill_the_grid():
    # Every split count below fills the 396 blocks in one round; the merge tail (8 splits per
    # L2 round trip) makes the longer splits the faster ones, as measured on an H200.
    assert _decode([4096]) == 256  # 16 splits (128 tasks), not 32 of the minimum chunk (256 tasks)
    assert _decode([16384]) == 512  # 32 splits (256 tasks), not 43 of 384 rows (344 tasks)
    assert _decode([2048]) == DECODE_MIN_KV_CHUNK  # 16 splits: 2 merge groups either way
    assert _merge_cost([16384], 384) == 6 * DECODE_MERGE_GROUP_COST


def test_batch_one_on_cuda_cores_takes_shorter_splits():
    # The CUDA-core kernels' merge groups weigh less against their rows (fitted on an H100 under
    # cold caches): kv 4k takes 32 splits (256 tasks, one round) where the tensor cores take 16;
    # kv 8k keeps 32 splits of 256 rows; on the FP8 kernel's 528 blocks kv 16k takes 64 of 256.
    cuda_16bit, cuda_fp8 = _C.DECODE_KERNEL_CUDA_CORES_16BIT, _C.DECODE_KERNEL_CUDA_CORES_FP8
    assert DECODE_MERGE_GROUP_COST_CUDA_CORES < DECODE_MERGE_GROUP_COST
    assert _decode([4096], kernel=cuda_16bit) == 128 and _decode([4096], kernel=cuda_fp8, grid=528) == 128
    assert _decode([4096], kernel=_C.DECODE_KERNEL_TENSOR_CORES_FP8) == 256
    assert _decode([8192], kernel=cuda_16bit) == 256 and _decode([8192], kernel=cuda_fp8, grid=528) == 256
    assert _decode([16384], kernel=cuda_fp8, grid=528) == 256
    assert _decode([16384], kernel=cuda_16bit) == 384  # 43 splits, measured level with 32 of 512


def test_between_one_and_two_rounds_the_split_balances_them():
    kv = [16384] * 8 + [1024] * 40  # 384 tasks, 64 of them 16 times longer than the rest
    chunk = _decode(kv)
    assert chunk > 0 and chunk % 64 == 0
    assert _fill(_tasks(kv, chunk)) > 0.95


def test_equal_tasks_at_the_bandwidth_bound_are_not_split():
    # 512 tasks on 396 blocks: two rounds dealt two per block stream at the full bandwidth, which
    # 3 splits (1536 tasks, four rounds) could only beat by what the bound leaves (6%).
    assert _decode([4096] * 64) == 0
    # Kernels without the bound (FP8, CUDA cores) take the 3 splits.
    for kernel in (_C.DECODE_KERNEL_TENSOR_CORES_FP8, _C.DECODE_KERNEL_CUDA_CORES_16BIT, UNBOUND,
                   _C.DECODE_KERNEL_NOT_MEASURED):
        assert _tasks([4096] * 64, _decode([4096] * 64, kernel=kernel)) == 1536


def test_the_bound_is_for_sixteen_bit_caches_on_nvidia_tensor_cores():
    def bound(platform, kv_dtype, use_tensor_cores):
        return _C.decode_bandwidth_bound(decode_kernel(platform, kv_dtype, use_tensor_cores))

    assert bound("cuda", torch.float16, True) and bound("cuda", torch.bfloat16, True)
    assert not bound("cuda", torch.float16, False) and not bound("cuda", torch.bfloat16, False)
    assert not bound("cuda", torch.float8_e4m3fn, True) and not bound("cuda", torch.float8_e5m2, True)
    assert not bound("cuda", torch.float8_e4m3fn, False)
    assert not bound("rocm", torch.float16, True) and not bound("cpu", torch.float16, True)
    assert [_C.decode_bandwidth_bound(k) for k in range(5)] == [k == BOUND for k in range(5)]


@pytest.mark.parametrize("kernel", [-1, 5])
def test_an_unknown_decode_kernel_is_refused(kernel):
    kv = np.full(4, 4096, dtype=np.int64)
    with pytest.raises(RuntimeError, match="choose_kv_chunk_size: decode_kernel must be one of"):
        choose_kv_chunk_size("cuda", np.ones(4, dtype=np.int64), kv, 8, 128, GRID, decode_kernel=kernel)
    plan = torch.zeros(1 << 16, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="plan_host: decode_kernel must be one of"):
        _C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor(kv, dtype=torch.int32), plan, 16, 8, 132, GRID,
                     -1, True, 0, False, -1, decode_kernel=kernel)
    with pytest.raises(RuntimeError, match="decode_bandwidth_bound: decode_kernel must be one of"):
        _C.decode_bandwidth_bound(kernel)


@pytest.mark.parametrize("batch", [128, 256, 512])
def test_two_rounds_or_more_of_kv_4k_are_not_split(batch):
    # Splits of these would fill the last round, but by less than DECODE_ROUND_FILL_GAIN.
    assert _decode([4096] * batch) == 0


@pytest.mark.parametrize("batch, chunk", [(256, 4096), (128, 5504)])
def test_equal_long_tasks_are_split_to_fill_the_last_round(batch, chunk):
    # 2048 tasks on 396 blocks are 5 rounds and 68 tasks; 4 splits make 8192, 20.7 rounds.
    # 1024 tasks are 2.6 rounds; 3 splits make 3072, 7.8 rounds. So for the kernels that take the
    # whole grid past two rounds, and for lengths within 1/16 of the longest (unequal tasks keep
    # the whole grid on every kernel).
    assert _decode([16384] * batch, kernel=UNBOUND) == chunk
    assert _decode([16384 - 1000] + [16384] * (batch - 1)) == chunk


@pytest.mark.parametrize("batch", [128, 256])
def test_equal_long_tasks_dealt_a_block_each_are_not_split(batch):
    # The bandwidth-bound kernel runs equal tasks past two rounds a block each, which the hardware
    # starts as places free up: no last round to fill, and no merge.
    assert _decode([16384] * batch) == 0
    assert _task_blocks([16384] * batch) == (0, batch * 8)


def test_a_launch_of_the_whole_grid_keeps_the_round_filling_split():
    # CUDA-graph wrappers launch the resident grid whatever the plan: its blocks take the tasks in
    # turn, so the last round is filled by the split, and the plan deals nothing past the grid.
    kv = np.full(128, 16384, dtype=np.int64)
    assert choose_kv_chunk_size("cuda", np.ones(128, dtype=np.int64), kv, 8, 128, GRID, decode_kernel=BOUND,
                                decode_task_blocks=False) == 5504
    plan = torch.zeros(1 << 16, dtype=torch.int32)
    valid, chunk, _, _, _ = _C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor(kv, dtype=torch.int32), plan,
                                         16, 8, 132, GRID, -1, True, 0, False, -1, decode_task_blocks=False,
                                         decode_kernel=BOUND)
    assert valid and chunk == 5504 and int(plan[TASK_BLOCKS]) == 0


@pytest.mark.parametrize("deal, chunk", [("grid", 5504), ("tasks", 0), ("tasks-all", 0)])
def test_the_measuring_switch_moves_the_split_with_the_deal(monkeypatch, deal, chunk):
    monkeypatch.setenv("TFO_DECODE_DEAL", deal)
    assert _decode([16384] * 128, kernel=UNBOUND) == chunk
    assert _decode([16384] * 128) == chunk


def test_unequal_long_tasks_are_left_to_the_item_order():
    kv = np.linspace(8192, 16384, 256).astype(np.int64)  # no task over the mean block load
    assert _decode(kv) == 0


def _numpy_round_filling_chunk(kv_lens, heads, grid):
    """The round-filling rule (two rounds or more of about equal tasks) written directly in numpy,
    for the bandwidth-bound kernel (tasks all of one length past two rounds: a block each, no split)."""
    max_kv, min_kv = int(kv_lens.max()), int(kv_lens.min())
    if max_kv - min_kv > max_kv // 16 or (max_kv == min_kv and kv_lens.size * heads > 2 * grid):
        return 0
    chunks = (-(-max_kv // np.arange(1, 9)) + 63) // 64 * 64
    chunks[0] = max_kv
    tasks = np.maximum(-(-kv_lens[None, :] // chunks[:, None]), 1).sum(axis=1) * heads
    cost = -(-tasks // grid) * (np.minimum(chunks, max_kv) + DECODE_TASK_COST).astype(np.float64)
    ok = (chunks >= MIN_KV_CHUNK) & (chunks < max_kv) & (cost < cost[0] * (1.0 - DECODE_ROUND_FILL_GAIN))
    if not ok.any():
        return 0
    cost[~ok] = np.inf
    return int(chunks[int(np.argmin(cost))])  # the first of equals: the fewest splits


@pytest.mark.parametrize("seed", range(30))
def test_round_filling_rule_matches_its_numpy_formulation(seed):
    rng = np.random.default_rng(2000 + seed)
    heads = int(rng.choice([1, 2, 4, 8]))
    grid = int(rng.choice([132, 264, 396, 912]))
    longest = int(rng.integers(1024, 70000))
    batch = int(rng.integers(-(-2 * grid // heads), 6 * grid // heads + 1))  # two rounds or more
    kv = rng.integers(longest - longest // int(rng.choice([8, 16, 64])), longest + 1, size=batch)
    assert _decode(kv, heads=heads, grid=grid) == _numpy_round_filling_chunk(kv, heads, grid)


def test_a_workspace_too_small_for_the_split_runs_unsplit():
    from torch_flashinfer_ops._plan import Workspace
    from torch_flashinfer_ops._upload import Upload

    def plan(workspace_bytes):
        workspace = Workspace(torch.empty(workspace_bytes, dtype=torch.uint8))
        upload = Upload(torch.device("cpu"), False)
        kv = torch.full((256,), 16384, dtype=torch.int32)
        # (Not the bandwidth-bound kernel, which runs these equal tasks unsplit, a block each.)
        workspace.plan("cuda", None, kv, 32, 8, 128, decode_grid=GRID, upload=upload, decode_kernel=UNBOUND)
        return int(workspace.plan_host[KV_CHUNK_SIZE]), int(workspace.plan_host[PARTIAL_ROWS])

    assert plan(32 << 20) == (4096, 1024)  # 1024 partial rows of 32 x 128 floats: 16 MiB
    assert plan(1 << 20) == (0, 0)  # 64 rows fit: unsplit, not an error


def test_unknown_grid_keeps_the_fill_rule_only():
    assert _decode([4096] * 64, grid=0) == 0
    assert _decode([4096], grid=0) == MIN_KV_CHUNK


def test_short_requests_are_never_split():
    assert _decode([2 * DECODE_MIN_KV_CHUNK - 1] * 64) == 0
    assert _decode([100]) == 0


def test_prefill_is_not_balanced_by_the_decode_rule():
    qo = np.full(64, 512, dtype=np.int64)
    assert choose_kv_chunk_size("cuda", qo, np.full(64, 4096), 8, 128, GRID) == 0


@pytest.mark.skipif(_ops.gpu_kernels_built(), reason="a build with GPU kernels reports its grid")
def test_grid_query_without_gpu_kernels_is_zero():
    assert _ops.decode_grid_blocks(torch.float16, torch.float16, 128, 32, 8, True) == 0
    assert _ops.decode_wide_tasks(torch.float16, torch.float16, 128, 32, 8, True) == 0
    assert _ops.decode_four_block_grid(torch.float16, torch.float16, 128, 32, 8, False) == 0


def _cost(kv_lens, chunk, heads=8, grid=GRID):
    """The policy's model: rounds x (the longest task's rows + a task's fixed cost), and no less
    than every row streamed by SATURATING blocks, plus a split's merge tail. (The policy keeps no
    split unless a split is DECODE_SPLIT_GAIN cheaper.)"""
    kv = np.asarray(kv_lens, dtype=np.int64)
    rows = int(kv.max()) if chunk == 0 else min(chunk, int(kv.max()))
    bound = float(kv.sum()) * heads / SATURATING + DECODE_TASK_COST
    merge = 0 if chunk == 0 else _merge_cost(kv, chunk)
    return max(-(-_tasks(kv, chunk, heads) // grid) * (rows + DECODE_TASK_COST), bound) + merge


@pytest.mark.parametrize("seed", range(30))
def test_under_two_rounds_the_chunk_is_near_the_cheapest_of_all(seed):
    # The policy tries a handful of chunks; an exhaustive search over every multiple of 64 is
    # the reference. Random batches of 1..98 requests (8..784 tasks: under two rounds).
    rng = np.random.default_rng(seed)
    kv = rng.integers(1, 20000, size=int(rng.integers(1, 99)))
    chunk = _decode(kv)
    assert chunk == 0 or (chunk >= DECODE_MIN_KV_CHUNK and chunk % 64 == 0)
    if int(kv.max()) < 2 * DECODE_MIN_KV_CHUNK:
        assert chunk == 0
        return
    best = min(_cost(kv, c) for c in [0] + list(range(DECODE_MIN_KV_CHUNK, int(kv.max()), 64)))
    assert _cost(kv, chunk) <= 1.10 * best


def test_batch_thirty_two_keeps_one_round_at_the_bandwidth_bound():
    kv = [4096] * 32  # 256 unsplit tasks: 65% of one round, but as many blocks as stream at full bandwidth
    assert _tasks(kv, _decode(kv)) == 256
    assert _tasks(kv, _decode(kv, kernel=UNBOUND)) == 768  # without it: 3 splits, two full rounds


@pytest.mark.parametrize("kv_len", [1024, 2048])
def test_batch_sixty_four_at_short_lengths_is_not_split(kv_len):
    # 512 unsplit tasks: two rounds, dealt two per block; 2 splits (1024 tasks in 3 rounds of
    # half the rows) are cheaper by the model, but not by DECODE_SPLIT_GAIN.
    # (At kv 4k the bandwidth bound keeps them unsplit too: test above.)
    assert _decode([kv_len] * 64) == 0


def _task_blocks(kv_lens, heads=8, grid=GRID, kernel=BOUND, four_block_grid=0, task_blocks=True):
    """plan()'s chunk and the blocks its decode tasks are dealt over (plan_info TASK_BLOCKS), for
    `kernel`: by default one with the bandwidth bound, and neither it nor UNBOUND takes the stream
    deal (test_cpu_stream_deal.py)."""
    plan = torch.zeros(1 << 16, dtype=torch.int32)
    valid, chunk, _, _, _ = _C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor(kv_lens, dtype=torch.int32),
                                         plan, 16, heads, 132, grid, -1, True, 0, False, -1,
                                         decode_task_blocks=task_blocks, decode_four_block_grid=four_block_grid,
                                         decode_kernel=kernel)
    assert valid
    return chunk, int(plan[TASK_BLOCKS])


FOUR_BLOCK_GRID = 528  # the CUDA-core 4-row tile at four blocks per multiprocessor, 132 SMs


def test_unsplit_equal_tasks_of_one_to_three_rounds_take_the_four_block_launch(monkeypatch):
    """16-bit caches on CUDA cores (no bandwidth bound): unsplit equal tasks of more than one round
    of the default grid and at most three launch the four-block grid (run() then takes that
    kernel); one round, split plans, more rounds, unequal tasks and whole-grid launches keep the
    default deal. Requests of 512 rows or more take the stream deal by default
    (test_cpu_stream_deal.py): the four-block deal is read here with it switched off, and below
    where it does not apply."""
    four = dict(four_block_grid=FOUR_BLOCK_GRID, kernel=_C.DECODE_KERNEL_CUDA_CORES_16BIT)
    assert _task_blocks([1024] * 64, **four) == (0, GRID // 8 * 8)  # the stream deal
    assert _task_blocks([256] * 128, **four) == (0, FOUR_BLOCK_GRID)  # too short for streams
    monkeypatch.setenv("TFO_DECODE_STREAM", "0")
    assert _task_blocks([1024] * 64, **four) == (0, FOUR_BLOCK_GRID)  # 512 tasks: 1.3 rounds
    assert _task_blocks([2048] * 128, **four) == (0, FOUR_BLOCK_GRID)  # 1024 tasks: 2.6 rounds
    assert _task_blocks([1024] * 64, kernel=UNBOUND) == (0, 256)  # without it: two each
    assert _task_blocks([1024] * 256, **four) == (0, 0)  # 5.2 rounds: the whole grid
    assert _task_blocks([200] * 20, **four) == (0, 160)  # one round: a block per task
    assert _task_blocks([1024, 900] * 32, **four)[1] == 0  # unequal tasks: the whole grid
    chunk, blocks = _task_blocks([16384] * 128, **four)  # split to fill the last round
    assert chunk > 0 and blocks == 0
    assert _task_blocks([1024] * 64, task_blocks=False, **four) == (0, 256)  # a whole-grid launch
    assert _task_blocks([1024] * 64, kernel=UNBOUND, four_block_grid=GRID) == (0, 256)  # no larger grid


FP8_TENSOR_CORES = _C.DECODE_KERNEL_TENSOR_CORES_FP8


def test_fp8_tensor_core_plans_that_fill_the_four_block_grid_stay_unsplit(monkeypatch):
    """The tensor-core kernel on FP8 caches: equal tasks that its four-block launch (the head
    columns, 528 blocks) runs in rounds at least 15/16 full stay unsplit, where the rounds model on
    the default grid splits them; rounds filled less, unequal lengths, whole-grid launches, other
    kernels and batches the default grid runs in one round keep the policy's chunk."""
    def chunk(lens, four_block_grid=FOUR_BLOCK_GRID, kernel=FP8_TENSOR_CORES, task_blocks=True):
        kv = np.asarray(lens)
        return choose_kv_chunk_size("cuda", np.ones(kv.size, dtype=np.int64), kv, 8, 128, GRID, decode_kernel=kernel,
                                    decode_task_blocks=task_blocks, decode_four_block_grid=four_block_grid)

    for lens in ([4096] * 64, [16384] * 64, [8192] * 128, [16384] * 128):  # 512 / 1024 tasks: 97% full
        assert chunk(lens, four_block_grid=0) > 0  # the rounds model on 396 blocks splits
        assert chunk(lens) == 0
        assert _task_blocks(lens, four_block_grid=FOUR_BLOCK_GRID, kernel=FP8_TENSOR_CORES) == (0, FOUR_BLOCK_GRID)
        # A launch of the whole resident grid never takes the four-block grid: the split stays.
        assert chunk(lens, task_blocks=False) == chunk(lens, four_block_grid=0, task_blocks=False) > 0
    # 2048 tasks: four rounds of the four-block grid, 97% full, past three of the default grid,
    # where plan() would otherwise take the stream deal; up to 4096 rows a task.
    for lens in ([1024] * 256, [4096] * 256):
        assert chunk(lens) == 0
        assert _task_blocks(lens, four_block_grid=FOUR_BLOCK_GRID, kernel=FP8_TENSOR_CORES) == (0, FOUR_BLOCK_GRID)
    assert _task_blocks([16384] * 256, four_block_grid=FOUR_BLOCK_GRID, kernel=FP8_TENSOR_CORES)[1] == GRID // 8 * 8
    # 400 / 800 tasks (rounds 76% full), 256 (one default round), unequal lengths.
    for lens in ([4096] * 50, [4096] * 100, [4096] * 32, [4096, 4032] * 32):
        assert chunk(lens) == chunk(lens, four_block_grid=0) > 0
    # Past four rounds of the four-block grid (4096 tasks: 7.8 rounds) the default deal's chunk.
    assert chunk([16384] * 512) == chunk([16384] * 512, four_block_grid=0)
    assert chunk([4096] * 64, kernel=UNBOUND) == chunk([4096] * 64, kernel=UNBOUND, four_block_grid=0)
    # The rule follows the deal: where the measuring switch deals a block per task past one round,
    # the four-block launch is not taken, and neither is the unsplit plan.
    monkeypatch.setenv("TFO_DECODE_DEAL", "tasks-all")
    assert chunk([4096] * 64) == chunk([4096] * 64, four_block_grid=0) > 0


def test_task_blocks_deal_one_round_one_each_and_equal_tasks_of_two_rounds_two_each():
    assert _task_blocks([1024] * 64) == (0, 256)  # 512 equal tasks: two each over 256 blocks
    assert _task_blocks([4096] * 32) == (0, 256)  # 256 unsplit tasks: one block each
    assert _task_blocks([16384] * 8 + [1024] * 40)[1] == 0  # split tasks of unequal rows: the whole grid
    assert _task_blocks([200] * 20) == (0, 160)  # one round (too short to split): one block per task
    assert _task_blocks([4096] * 128) == (0, 1024)  # more than two rounds: a block per task
    assert _task_blocks([4096] * 128, kernel=_C.DECODE_KERNEL_CUDA_CORES_16BIT) == (0, 0)  # or the whole grid
    assert _task_blocks([1024, 900] * 32)[1] == 0  # unequal tasks over more than a round: the whole grid
    chunk, blocks = _task_blocks([4096])  # batch 1: split to fill a round
    assert blocks == 8 * -(-4096 // chunk)
    plan = torch.zeros(1 << 16, dtype=torch.int32)  # CPU plans leave it 0
    _C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor([1024] * 64, dtype=torch.int32), plan, 16, 8, 132,
                 GRID, -1, False, 0, False, -1)
    assert int(plan[TASK_BLOCKS]) == 0


CUDA_CORES_FP8_GRID = 528  # the CUDA-core kernel on FP8 caches: four blocks a multiprocessor, 132 SMs


@pytest.mark.parametrize("kv_len", [1024, 4096])
def test_cuda_core_fp8_short_tasks_past_fifteen_eighth_rounds_take_a_block_each(monkeypatch, kv_len):
    """The CUDA-core kernel on FP8 caches deals equal unsplit tasks of at most 4096 rows a block
    each past 15/8 rounds of its grid and up to four (measured at 1.9-3.9 rounds, H100); one round,
    the two-per-block rounds below 15/8, longer or split tasks, more rounds, unequal tasks,
    whole-grid launches and the measuring switch keep the deals they had."""
    cc8 = dict(kernel=_C.DECODE_KERNEL_CUDA_CORES_FP8, grid=CUDA_CORES_FP8_GRID)
    assert _task_blocks([kv_len] * 64, **cc8) == (0, 512)  # one round: a block each anyway
    assert _task_blocks([kv_len] * 100, **cc8) == (0, 400)  # 1.5 rounds: two each
    assert _task_blocks([kv_len] * 123, **cc8) == (0, 492)  # 984 tasks, 1.86 rounds: two each
    for batch in (124, 128, 192, 256, 264):  # 1.88 to 4.0 rounds
        assert _task_blocks([kv_len] * batch, **cc8) == (0, 8 * batch)
    assert _task_blocks([kv_len] * 265, **cc8) == (0, 0)  # past four rounds: the whole grid
    assert _task_blocks([4097] * 128, **cc8) == (0, 512)  # tasks longer than 4096 rows: two each
    assert _task_blocks([4097] * 192, **cc8) == (0, 0)  # or the whole grid
    assert _task_blocks([kv_len, kv_len - 64] * 96, **cc8)[1] == 0  # unequal tasks
    assert _task_blocks([kv_len] * 192, task_blocks=False, **cc8) == (0, 0)  # a whole-grid launch
    assert _task_blocks([kv_len] * 192, kernel=_C.DECODE_KERNEL_CUDA_CORES_16BIT, grid=CUDA_CORES_FP8_GRID) == (0, 0)
    monkeypatch.setenv("TFO_DECODE_DEAL", "grid")  # the measuring switch: the deal before the rule
    assert _task_blocks([kv_len] * 192, **cc8) == (0, 0)
    assert _task_blocks([kv_len] * 128, **cc8) == (0, 512)


def test_cuda_core_fp8_split_tasks_keep_the_whole_grid():
    # Requests split to fill the last round (equal pieces, partial rows) are no short unsplit tasks.
    chunk, blocks = _task_blocks([16384] * 265, kernel=_C.DECODE_KERNEL_CUDA_CORES_FP8, grid=CUDA_CORES_FP8_GRID)
    assert chunk > 0 and blocks == 0


def test_task_blocks_deal_under_the_measuring_switch(monkeypatch):
    monkeypatch.setenv("TFO_DECODE_DEAL", "grid")  # past two rounds the whole grid, for any kernel
    assert _task_blocks([4096] * 128) == (0, 0)
    assert _task_blocks([1024] * 64) == (0, 256)  # two rounds or less: as by default
    monkeypatch.setenv("TFO_DECODE_DEAL", "tasks")  # equal tasks past two rounds: a block each
    assert _task_blocks([4096] * 128, kernel=UNBOUND) == (0, 1024)
    assert _task_blocks([1024] * 64) == (0, 256)
    assert _task_blocks([1024, 900] * 128)[1] == 0  # unequal tasks: the whole grid
    monkeypatch.setenv("TFO_DECODE_DEAL", "tasks-all")  # from one round on
    assert _task_blocks([1024] * 64) == (0, 512)
    assert _task_blocks([200] * 20) == (0, 160)
    monkeypatch.setenv("TFO_DECODE_DEAL", "blocks")
    with pytest.raises(RuntimeError, match="TFO_DECODE_DEAL"):
        _task_blocks([4096] * 128)


def test_batch_sixteen_fills_one_round_instead_of_spilling_into_a_second():
    kv = [4096] * 16  # 128 tasks: 4 splits would make 512 (a second round of 116), 3 make 384
    assert _tasks(kv, _decode(kv)) == 384


def _numpy_cheapest_decode_chunk(kv_lens, heads, grid, bound, group_cost=DECODE_MERGE_GROUP_COST):
    """The decode cost rule written directly in numpy (float arithmetic, every candidate costed
    at once): the reference for the host planner's C++ loop over the same candidates."""
    max_kv = int(kv_lens.max())
    splits = -(-max_kv // np.arange(2, 17))
    ladder = 1.08 ** np.arange(0, 90)
    ladder = DECODE_MIN_KV_CHUNK * ladder[: np.searchsorted(ladder, max_kv / DECODE_MIN_KV_CHUNK)]
    chunks = (np.maximum(np.concatenate([splits, ladder]), DECODE_MIN_KV_CHUNK) + 63) // 64 * 64
    chunks = np.sort(chunks[chunks < max_kv])[::-1]
    chunks = np.concatenate([[max_kv], chunks]).astype(np.float64)
    per_request = np.maximum(np.floor((kv_lens.astype(np.float64)[None, :] - 1.0) / chunks[:, None]) + 1.0, 1.0)
    cost = np.ceil(per_request.sum(axis=1) * heads / grid) * (chunks + DECODE_TASK_COST)
    merge = np.ceil(np.ceil(max_kv / chunks) / DECODE_MERGE_ROWS_IN_FLIGHT) * group_cost
    # Every candidate costed as no faster than every row streamed by SATURATING blocks, with its
    # merge tail; the cheapest, of equals the one of the shortest tasks, then the largest. It must
    # beat no split by DECODE_SPLIT_GAIN.
    bound = kv_lens.sum() * heads / SATURATING + DECODE_TASK_COST if bound else 0.0
    splits = np.maximum(cost[1:], bound) + merge[1:]
    if splits.size == 0:
        return 0
    best = 1 + int(np.lexsort((np.arange(splits.size), cost[1:], splits))[0])
    if splits[best - 1] >= max(cost[0], bound) * (1.0 - DECODE_SPLIT_GAIN):
        return 0
    return int(chunks[best])


@pytest.mark.parametrize("seed", range(40))
def test_decode_rule_matches_its_numpy_formulation(seed):
    rng = np.random.default_rng(1000 + seed)
    heads = int(rng.choice([1, 2, 4, 8]))
    grid = int(rng.choice([132, 264, 396, 912]))
    kv = rng.integers(0, int(rng.choice([600, 5000, 70000])), size=int(rng.integers(1, 2 * grid // heads)))
    if int(kv.max()) < 2 * DECODE_MIN_KV_CHUNK:
        kv[0] = 2 * DECODE_MIN_KV_CHUNK
    # Each kernel: the bound (tensor cores, 16-bit), none with the tensor cores' merge weight
    # (FP8), none with the CUDA cores' (16-bit, FP8).
    kernel, bound, group_cost = [(BOUND, True, DECODE_MERGE_GROUP_COST),
                                 (_C.DECODE_KERNEL_TENSOR_CORES_FP8, False, DECODE_MERGE_GROUP_COST),
                                 (_C.DECODE_KERNEL_CUDA_CORES_16BIT, False, DECODE_MERGE_GROUP_COST_CUDA_CORES),
                                 (UNBOUND, False, DECODE_MERGE_GROUP_COST_CUDA_CORES)][seed % 4]
    assert _decode(kv, heads=heads, grid=grid, kernel=kernel) == _numpy_cheapest_decode_chunk(kv, heads, grid, bound,
                                                                                              group_cost)


def test_batch_one_takes_the_split_that_fits_the_wide_shape():
    # The cheapest splits of kv 8k / 16k make 256 tasks (narrow); 16 splits of twice the rows fit
    # the 132 multiprocessors (measured faster on an H200 with the chunk forced).
    assert _decode([8192]) == 256 and _decode([8192], wide=WIDE) == 512
    assert _decode([16384]) == 512 and _decode([16384], wide=WIDE) == 1024
    assert _decode([4096] * 2) == 256 and _decode([4096] * 2, wide=WIDE) == 512  # 256 -> 128 tasks
    assert _decode([2048] * 4) == 256 and _decode([2048] * 4, wide=WIDE) == 512
    # Already within the wide shape: unchanged.
    assert _decode([4096], wide=WIDE) == _decode([4096]) == 256
    assert _decode([2048], wide=WIDE) == _decode([2048]) == DECODE_MIN_KV_CHUNK
    # Fitting would take more than twice the rows: the cheapest split stays (narrow).
    for kv in ([32768] * 3, [16384] * 8):  # the cheapest fills the grid (384 tasks)
        assert _decode(kv, wide=WIDE) == _decode(kv) and _tasks(kv, _decode(kv)) > 2 * WIDE
    # Under the bandwidth bound fewer, longer splits cost the same streaming and merge less:
    # 256 tasks (kv 8k x 2: 16 splits of 512; kv 16k x 4: 8 of 2048), which fit the wide shape at
    # twice the rows; without the bound the rounds alone choose about one full round.
    assert _decode([8192] * 2) == 512 and _decode([8192] * 2, wide=WIDE) == 1024
    assert _decode([16384] * 4) == 2048 and _decode([16384] * 4, wide=WIDE) == 4096
    assert _tasks([16384] * 4, _decode([16384] * 4, kernel=UNBOUND)) == 384
    # Unsplit plans are never split for the shape.
    assert _decode([300] * 40, wide=WIDE) == 0


def _numpy_wide_decode_chunk(kv_lens, heads, chunk, wide):
    """The wide-shape rule directly: the smallest multiple of 64 above chunk, at most twice it and
    under the longest request, whose tasks fit; else chunk."""
    if chunk == 0 or _tasks(kv_lens, chunk, heads) <= wide:
        return chunk
    candidates = np.arange(chunk + 64, min(2 * chunk, int(np.max(kv_lens)) - 1) + 1, 64)
    fits = [c for c in candidates if _tasks(kv_lens, int(c), heads) <= wide]
    return int(fits[0]) if fits else chunk


@pytest.mark.parametrize("seed", range(40))
def test_wide_rule_matches_its_numpy_formulation_and_fits_the_launch(seed):
    rng = np.random.default_rng(2000 + seed)
    heads = int(rng.choice([1, 2, 4, 8]))
    wide = int(rng.choice([66, 132]))  # 132 multiprocessors, head slices 2 or 1
    kv = rng.integers(1, int(rng.choice([5000, 40000])), size=int(rng.integers(1, 2 * GRID // heads)))
    kv[0] = max(int(kv[0]), 2 * DECODE_MIN_KV_CHUNK)
    narrow = _decode(kv, heads=heads)
    chunk = _decode(kv, heads=heads, wide=wide)
    assert chunk == _numpy_wide_decode_chunk(kv, heads, narrow, wide)
    if chunk != narrow:  # taken for the shape: the launch of its plan takes it
        plan = torch.zeros(1 << 18, dtype=torch.int32)
        valid, planned, _, _, _ = _C.plan_host(
            torch.empty(0, dtype=torch.int32), torch.from_numpy(kv.astype(np.int32)), plan, 16, heads, 132, GRID,
            -1, True, 0, False, -1, decode_wide_tasks=wide, decode_kernel=BOUND)
        assert valid and planned == chunk and 0 < int(plan[TASK_BLOCKS]) <= wide


# Prefill on a persistent grid of known size: a unit longer than twice the mean block load is split.
PREFILL_GRID = 264  # e.g. 132 multiprocessors x 2 resident blocks


def _prefill_chunk(qo_lens, kv_lens, heads, q_tile, causal, grid=PREFILL_GRID):
    return choose_kv_chunk_size("cuda", np.asarray(qo_lens), np.asarray(kv_lens), heads, q_tile, 0, grid, causal)


@pytest.mark.parametrize("heads,q_tile", [(8, 32), (32, 128)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(16, 1024), (4, 4096), (1, 1024), (1, 4096), (1, 16384), (64, 256)])
def test_prefill_batches_of_equal_requests_are_not_split(shape, causal, heads, q_tile):
    """The benchmark shapes keep their schedules: no unit exceeds twice the mean load (a single
    causal 1k request, 1.7-1.8x, is measured slower split)."""
    n, length = shape
    assert _prefill_chunk([length] * n, [length] * n, heads, q_tile, causal) == 0


def test_a_long_cached_prefix_beside_a_full_grid_is_split():
    """16 new tokens on a 32k-token cache beside a 4k causal prompt: the 16-token unit streams
    32k rows, 3.5x the mean block load; split to about the mean, the lists balance the grid."""
    try:
        from . import test_cpu_work_lists as wl
    except ImportError:
        import test_cpu_work_lists as wl
    qo, kv, heads = [16, 4096], [32768, 4096], 8
    chunk = _prefill_chunk(qo, kv, heads, 32, True)
    assert MIN_KV_CHUNK <= chunk < 32768 and chunk % 64 == 0
    assert _prefill_chunk(qo, kv, heads, 32, True, grid=0) == 0  # the grid unknown: as before
    ratios = []
    for c in (0, chunk):
        plan, _ = wl._plan(qo, kv, heads, PREFILL_GRID, causal=True, q_tile=32, chunk=c)
        costs = wl._costs(plan, qo, kv, causal=True)
        ratios.append(wl._list_loads(plan, costs, heads).max() / (sum(costs) * heads / PREFILL_GRID))
    assert ratios[0] > 3.0 and ratios[1] < 1.1
