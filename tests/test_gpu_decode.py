"""GPU tier: single decode and BatchDecodeWithPagedKVCacheWrapper (both kernel families) against
the float64 reference, split-KV, FP8 caches, and CUDA-graph capture/replay across re-plans."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
    from .pdl_chain import assert_pdl_chain_matches, attention_chain, device_has_pdl, late_copy
except ImportError:
    import reference as ref
    from pdl_chain import assert_pdl_chain_matches, attention_chain, device_has_pdl, late_copy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU"),
]

F16, BF16 = torch.float16, torch.bfloat16
E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
FP8 = (E4M3, E5M2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
DEV = "cuda"
# Bit views used to scatter into caches (index_put on every dtype).
BITS = {F16: torch.int16, BF16: torch.int16}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture
def workspace():
    return torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device=DEV)


def _rand_kv(n, hkv, d, dtype):
    if dtype in FP8:
        return torch.randn(n, hkv, d).to(dtype)
    return torch.randn(n, hkv, d, dtype=dtype)


class Paged:
    """A shuffled, partly filled paged cache built with vectorised scatters (the reference's
    builder loops per token, too slow for 512 requests or 32k tokens); the per-request K/V
    it holds stay on the host for the float64 reference."""

    def __init__(self, kv_lens, page_size, hkv, d, dtype, kv_layout, single_tensor=True, ks=None):
        self.kv_lens = list(kv_lens)
        self.page_size = page_size
        self.ks = list(ks) if ks is not None else [_rand_kv(n, hkv, d, dtype) for n in kv_lens]
        self.vs = [_rand_kv(n, hkv, d, dtype) for n in kv_lens]
        self.indptr, self.indices, self.last, num_pages = ref.make_page_table(self.kv_lens, page_size)
        shape = (page_size, hkv, d) if kv_layout == "NHD" else (hkv, page_size, d)
        bits = torch.uint8 if dtype in FP8 else torch.int16
        pad = torch.full((num_pages, 2) + shape, 100.0).to(dtype).view(bits)  # finite, large: must stay unread
        k_all = torch.cat(self.ks).view(bits) if self.ks else torch.empty(0, hkv, d, dtype=bits)
        v_all = torch.cat(self.vs).view(bits) if self.vs else torch.empty(0, hkv, d, dtype=bits)
        page_of, slot_of = [], []
        for b, n in enumerate(self.kv_lens):
            pages = self.indices[self.indptr[b]: self.indptr[b + 1]].long()
            t = torch.arange(n)
            page_of.append(pages[t // page_size])
            slot_of.append(t % page_size)
        page_of = torch.cat(page_of) if page_of else torch.empty(0, dtype=torch.long)
        slot_of = torch.cat(slot_of) if slot_of else torch.empty(0, dtype=torch.long)
        if kv_layout == "NHD":
            pad[page_of, 0, slot_of] = k_all
            pad[page_of, 1, slot_of] = v_all
        else:
            pad[page_of, 0, :, slot_of] = k_all
            pad[page_of, 1, :, slot_of] = v_all
        cache = pad.view(dtype).to(DEV)
        self.cache = cache if single_tensor else (cache[:, 0].contiguous(), cache[:, 1].contiguous())

    def reference(self, q, k_scale=None, v_scale=None, **kw):
        outs, lses = [], []
        for b in range(q.shape[0]):
            o, l = ref.decode_ref(q[b].cpu(), ref.dequant(self.ks[b], k_scale), ref.dequant(self.vs[b], v_scale), **kw)
            outs.append(o)
            lses.append(l)
        return torch.stack(outs), torch.stack(lses)


def _wrapper(workspace, kv_layout, use_tensor_cores):
    return flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout, use_tensor_cores=use_tensor_cores)


def _plan(w, P, hq, hkv, d, q_dtype, kv_dtype, **kw):
    w.plan(P.indptr, P.indices, P.last, hq, hkv, d, P.page_size, q_data_type=q_dtype, kv_data_type=kv_dtype, **kw)


def _check(w, q, P, r_out, r_lse, dtype, out_row_pad=0, **run_kw):
    """Runs into a NaN-poisoned out and lse and checks them against the reference. out_row_pad >
    0: out is a view whose rows are that many elements longer than head_dim (contiguous only in
    its last dimension), and the padding must stay untouched."""
    d = q.shape[-1]
    wide = torch.full((*q.shape[:2], d + out_row_pad), float("nan"), dtype=dtype, device=DEV)
    out = wide[..., :d]
    assert out.stride(1) == d + out_row_pad
    lse = torch.full(q.shape[:2], float("nan"), dtype=torch.float32, device=DEV)
    o, l = w.run(q, P.cache, out=out, lse=lse, return_lse=True, **run_kw)
    assert o is out and l is lse
    torch.cuda.synchronize()
    ref.assert_attention_close(out.cpu(), r_out, dtype, "out:")
    ref.assert_lse_close(lse.cpu(), r_lse, "lse:")
    assert torch.isnan(wide[..., d:]).all(), "the padding past head_dim was written"
    return (out.cpu().double() - r_out).abs().max().item()


def _splits(w):
    return int(w._workspace.plan_host[4])  # plan_info header: partial rows


# (kv_lens, page_size, hq, hkv, head_dim, dtype, kv_layout); lists give uneven batches.
CASES = {
    "bs1-kv1": ([1], 16, 32, 8, 128, F16, "NHD"),
    "bs1-kv32k-split": ([32768], 16, 32, 8, 128, F16, "NHD"),
    "bs7-uneven-mha-p1-hnd": ([1, 15, 16, 17, 300, 1000, 4097], 1, 8, 8, 64, BF16, "HND"),
    "bs16-gqa8-p64": ([int(x) for x in torch.randint(1, 4096, (16,), generator=torch.Generator().manual_seed(3))],
                      64, 32, 4, 128, F16, "NHD"),
    "bs512-mqa-hnd": ([int(x) for x in torch.randint(1, 200, (512,), generator=torch.Generator().manual_seed(4))],
                      16, 8, 1, 128, F16, "HND"),
    "bs3-d256": ([100, 2000, 5000], 16, 16, 4, 256, BF16, "NHD"),
    "bs4-gqa16": ([33, 700, 2500, 9], 16, 32, 2, 128, F16, "NHD"),
    "bs5-gqa2-d64": ([5, 64, 65, 1024, 3000], 16, 4, 2, 64, F16, "HND"),
    "bs4-p7": ([1, 7, 8, 2000], 7, 32, 8, 128, F16, "NHD"),  # a page size that is not a power of two
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode(workspace, case, use_tensor_cores):
    kv_lens, page_size, hq, hkv, d, dtype, layout = CASES[case]
    P = Paged(kv_lens, page_size, hkv, d, dtype, layout, single_tensor=(len(kv_lens) % 2 == 1))
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, layout, use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    if case == "bs1-kv32k-split":
        assert _splits(w) > 1, "batch 1 at 32k must be split over the GPU"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("form", ["int32", "int64", "strided", "graph"])
def test_batch_decode_planned_from_device_arrays(workspace, form):
    """plan() given its index arrays on the GPU (as serving loops keep them): int32 arrays are
    used in place, other dtypes and strided views through their host copies, and CUDA-graph mode
    copies them device to device into its fixed buffers. Each against the float64 reference,
    with the arrays poisoned after plan() where plan() must have copied them."""
    kv_lens, page_size, hq, hkv, d, dtype = [7, 300, 1, 2049, 64], 16, 32, 8, 128, F16
    P = Paged(kv_lens, page_size, hkv, d, dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)

    def device_form(t):
        if form == "int64":
            return t.to(DEV, torch.int64)
        if form == "strided":  # every other element of a twice-as-long array
            return torch.stack([t, torch.full_like(t, -7)], 1).reshape(-1).to(DEV)[::2]
        return t.to(DEV)

    indptr, indices, last = device_form(P.indptr), device_form(P.indices), device_form(P.last)
    if form == "graph":
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "NHD", use_cuda_graph=True,
            paged_kv_indptr_buffer=torch.empty(len(kv_lens) + 1, dtype=torch.int32, device=DEV),
            paged_kv_indices_buffer=torch.empty(indices.numel(), dtype=torch.int32, device=DEV),
            paged_kv_last_page_len_buffer=torch.empty(len(kv_lens), dtype=torch.int32, device=DEV))
    else:
        w = _wrapper(workspace, "NHD", False)
    w.plan(indptr, indices.contiguous() if form == "strided" else indices, last, hq, hkv, d, page_size,
           q_data_type=dtype, kv_data_type=dtype)
    if form != "int32":  # the run must read the copies plan() made, not these arrays
        indptr.fill_(-1)
        last.fill_(-1)
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


def test_plan_from_host_arrays_does_not_wait_for_the_gpu(workspace):
    """plan() from host index arrays queues its host-to-device copies behind the GPU's queued
    work without waiting for it (pinned staging), so a serving loop's planning overlaps the
    previous step's kernels; the run that follows is still correct."""
    kv_lens, page_size, hq, hkv, d, dtype = [300, 17, 2049], 16, 32, 8, 128, F16
    P = Paged(kv_lens, page_size, hkv, d, dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", False)
    _plan(w, P, hq, hkv, d, dtype, dtype)  # warm-up: the pinned blocks are cached
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # about a second of queued GPU work
    busy = torch.cuda.Event()
    busy.record()
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert not busy.query(), "plan() waited for the GPU's queued work"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_dtype", [F16, E4M3], ids=["f16", "e4m3"])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
@pytest.mark.parametrize("rounds", [0.6, 1.3, 2.5])
def test_batch_decode_task_blocks(workspace, use_tensor_cores, rounds, kv_dtype):
    """plan() deals unsplit tasks of one length to fewer blocks than the resident grid: one each
    within a round, two each between one and two rounds (plan_info's task blocks, which run()
    launches); past two rounds a block each for the tensor-core kernel on 16-bit caches (a launch
    beyond the resident grid), the whole grid for the others, but for the CUDA-core kernel on FP8
    caches, which deals short tasks a block each past 15/8 rounds (up to four). Where the kernel has a four-block
    grid besides its default (NVIDIA: the CUDA-core 4-row tile on a 16-bit cache, FP8 caches run
    that tile by default; the tensor-core head columns on an FP8 cache), tasks of one to three
    rounds take it instead. The attention must match the reference, also from a launch of another
    size (a graph captured with one plan replays its launch after a re-plan), a block per task
    beyond the resident grid and the four-block kernels' launches included."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    fp8 = kv_dtype in FP8
    k_scale, v_scale = (0.7, 1.9) if fp8 else (None, None)
    grid = flashinfer._ops.decode_grid_blocks(dtype, kv_dtype, d, hq, hkv, use_tensor_cores)
    four = flashinfer._ops.decode_four_block_grid(dtype, kv_dtype, d, hq, hkv, use_tensor_cores)
    assert grid > 0 and (four == 0 or four > grid) and (four == 0 or use_tensor_cores == fp8)
    batch = max(1, int(rounds * grid) // hkv)
    P = Paged([200] * batch, 16, hkv, d, kv_dtype, "NHD")  # too short to split
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype)
    tasks = batch * hkv
    # Past two rounds a block per task where the kernel streams at the full bandwidth from two
    # blocks per multiprocessor (the tensor-core kernel on 16-bit caches), else the whole grid;
    # NVIDIA's CUDA-core kernel on FP8 caches a block per (short) task past 15/8 rounds.
    past_two = tasks if use_tensor_cores and not fp8 else 0
    short_fp8 = fp8 and not use_tensor_cores and torch.version.hip is None and 15 * grid < 8 * tasks <= 32 * grid
    if tasks <= grid or short_fp8:
        dealt = tasks
    elif four and tasks <= 3 * grid:
        dealt = four
    else:
        dealt = -(-tasks // 2) if tasks <= 2 * grid else past_two
    assert _splits(w) == 0 and w._plan.task_blocks == dealt
    r_out, r_lse = P.reference(q, k_scale, v_scale)
    scales = dict(k_scale=k_scale, v_scale=v_scale) if fp8 else {}
    _check(w, q, P, r_out, r_lse, dtype, **scales)
    for blocks in (1, 7, grid + 5, four, tasks, 3 * tasks):  # any launch size covers every task
        w._plan.task_blocks = blocks
        _check(w, q, P, r_out, r_lse, dtype, **scales)


@pytest.mark.parametrize("rounds, kv_len", [(1, 3000), (4, 600)])
def test_fp8_tensor_core_plan_that_fills_the_four_block_grid_runs_unsplit(workspace, rounds, kv_len):
    """Equal requests on an FP8 cache whose tasks fill the tensor-core kernel's four-block grid
    (its head columns) stay unsplit and take that launch (plan_host.cpp, four_block_unsplit):
    in one round, where the rounds model on the default grid would split them, and in four, past
    three rounds of the default grid, where the stream deal would cut them; the attention matches
    the reference."""
    hq, hkv, d, dtype, kv_dtype = 32, 8, 128, F16, E4M3
    four = flashinfer._ops.decode_four_block_grid(dtype, kv_dtype, d, hq, hkv, True)
    grid = flashinfer._ops.decode_grid_blocks(dtype, kv_dtype, d, hq, hkv, True)
    if four <= grid:
        pytest.skip("no four-block grid for the tensor-core kernel on FP8 caches on this device")
    batch = rounds * four // hkv  # full rounds of the four-block grid
    P = Paged([kv_len] * batch, 16, hkv, d, kv_dtype, "NHD")
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", True)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype)
    assert _splits(w) == 0 and w._plan.task_blocks == four
    r_out, r_lse = P.reference(q, 0.7, 1.9)
    _check(w, q, P, r_out, r_lse, dtype, k_scale=0.7, v_scale=1.9)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_block_per_task_with_splits_merged_in_the_launch(workspace, use_tensor_cores):
    """A launch of a block per task where the tasks outnumber the resident blocks, of requests
    split so finely that their (request, kv head) groups still fit one round: the splits merge in
    the launch, each group by whichever of its blocks arrives last, whenever the hardware started
    it. Also on the resident grid and on fewer blocks."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    grid = flashinfer._ops.decode_grid_blocks(dtype, dtype, d, hq, hkv, use_tensor_cores)
    P = Paged([5000, 3000, 4001], 16, hkv, d, dtype, "NHD")
    q = torch.randn(3, hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    plan_with_chunk = w._workspace.plan
    w._workspace.plan = lambda *a, **kw: plan_with_chunk(*a, **{**kw, "kv_chunk_size": 64})
    _plan(w, P, hq, hkv, d, dtype, dtype)
    tasks = int(w._workspace.plan_host[0]) * hkv  # plan_info header: items
    assert tasks == (79 + 47 + 63) * hkv and tasks > grid and _splits(w) > 0
    r_out, r_lse = P.reference(q)
    for blocks in (tasks, grid, 5):
        w._plan.task_blocks = blocks
        _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_dtype", [F16, torch.float8_e4m3fn], ids=["f16", "e4m3"])
@pytest.mark.parametrize("kv_lens, task_blocks", [([300] * 16, None), ([5000], None), ([1500] * 100, 1),
                                                  ([1500] * 100, 64)],
                         ids=["unsplit-3-tiles", "split-3-tiles", "12-tiles-one-block", "12-tiles-64-blocks"])
def test_batch_decode_wide_shape_many_tiles(workspace, kv_lens, task_blocks, kv_dtype):
    """A launch of at most one block per multiprocessor runs the tensor-core kernel's wide shape
    where it has one (NVIDIA: 128-token tiles): tasks of three tiles as plan() makes them at small
    batches, and of twelve when a launch of 1 or 64 blocks takes a plan of 800 unsplit tasks."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    multiprocessors = torch.cuda.get_device_properties(DEV).multi_processor_count
    P = Paged(kv_lens, 16, hkv, d, kv_dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", True)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype)
    if task_blocks is None:
        if not 0 < w._plan.task_blocks <= multiprocessors:
            pytest.skip(f"{w._plan.task_blocks} task blocks on {multiprocessors} multiprocessors: "
                        "not the wide shape")
    else:
        w._plan.task_blocks = task_blocks
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_dtype", [F16, torch.float8_e4m3fn], ids=["f16", "e4m3"])
@pytest.mark.parametrize("kv_lens", [[16384], [4096, 4096]], ids=["bs1-kv16k", "bs2-kv4k"])
def test_batch_decode_split_for_the_wide_shape(workspace, kv_lens, kv_dtype):
    """Where the cheapest split has more tasks than the multiprocessors, plan() takes one whose
    tasks fit the tensor-core kernel's wide shape (chunks of up to twice the rows; plan_host.cpp
    wide_decode_chunk), and the eager launch runs that shape over tasks of 8 and 4 tiles. A wrapper made for
    CUDA graphs launches the whole grid, which is narrow: its plan keeps the cheapest split."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    wide = flashinfer._ops.decode_wide_tasks(dtype, kv_dtype, d, hq, hkv, True)
    if wide == 0:
        pytest.skip("no wide shape on this GPU or build")
    P = Paged(kv_lens, 16, hkv, d, kv_dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", True)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype)
    assert 0 < w._plan.task_blocks <= wide, f"{w._plan.task_blocks} task blocks for {wide} wide tasks"
    wide_splits = _splits(w)
    assert wide_splits > 0
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)
    graph_w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        torch.empty_like(workspace), "NHD", use_cuda_graph=True, use_tensor_cores=True,
        paged_kv_indptr_buffer=torch.empty(len(kv_lens) + 1, dtype=torch.int32, device=DEV),
        paged_kv_indices_buffer=torch.empty(P.indices.numel(), dtype=torch.int32, device=DEV),
        paged_kv_last_page_len_buffer=torch.empty(len(kv_lens), dtype=torch.int32, device=DEV))
    _plan(graph_w, P, hq, hkv, d, dtype, kv_dtype)
    assert _splits(graph_w) > wide_splits, "the narrow launch's plan has the cheapest (finer) split"
    _check(graph_w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_balanced_split(workspace, use_tensor_cores):
    """Between one and two rounds of tasks on the persistent grid, plan() either splits requests
    so that the rounds fill evenly or deals the equal unsplit tasks two per block; either plan
    must give the same attention."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    grid = flashinfer._ops.decode_grid_blocks(dtype, dtype, d, hq, hkv, use_tensor_cores)
    assert grid > 0
    batch = grid // hkv + 1  # one round and a few tasks over
    P = Paged([2048] * batch, 16, hkv, d, dtype, "NHD")
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert _splits(w) > 0 or w._plan.task_blocks > 0, f"{batch * hkv} tasks on {grid} blocks: split or dealt"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("use_tensor_cores, graph_wrapper", [(False, False), (True, False), (True, True)],
                         ids=["simt", "mma", "mma-graph-wrapper"])
def test_batch_decode_round_filling_split(workspace, use_tensor_cores, graph_wrapper):
    """Just over two rounds of equal tasks on the persistent grid: where the launch is the whole
    grid (any kernel of a CUDA-graph wrapper), plan() splits every request in two so that the last
    round is not a few tasks alone (plan_host.cpp's round-filling rule), and the split requests
    merge in the launch; the tensor-core kernel on a 16-bit cache, whose eager launch takes a block
    per task past two rounds, runs them unsplit; the CUDA-core kernel's eager launch takes the
    stream deal (decode_order.cpp: streams of equal rows, the requests they cut split)."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    grid = flashinfer._ops.decode_grid_blocks(dtype, dtype, d, hq, hkv, use_tensor_cores)
    assert grid > 0
    batch = 2 * grid // hkv + 1
    P = Paged([2048] * batch, 16, hkv, d, dtype, "NHD")
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEV)
    if graph_wrapper:
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "NHD", use_cuda_graph=True, use_tensor_cores=use_tensor_cores,
            paged_kv_indptr_buffer=torch.empty(batch + 1, dtype=torch.int32, device=DEV),
            paged_kv_indices_buffer=torch.empty(P.indices.numel(), dtype=torch.int32, device=DEV),
            paged_kv_last_page_len_buffer=torch.empty(batch, dtype=torch.int32, device=DEV))
    else:
        w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    bound = flashinfer._C.decode_bandwidth_bound(flashinfer._plan.decode_kernel(w.platform, dtype, True))
    if use_tensor_cores and not graph_wrapper and bound:
        assert _splits(w) == 0 and w._plan.task_blocks == batch * hkv, "equal tasks past two rounds: a block each"
    elif not use_tensor_cores and not graph_wrapper and flashinfer._ops.decode_four_block_grid(dtype, dtype, d, hq,
                                                                                             hkv, False) > 0:
        assert 0 < _splits(w) < batch and w._plan.task_blocks == grid // hkv * hkv, "the stream deal"
    else:
        assert _splits(w) == 2 * batch, f"{batch * hkv} tasks on {grid} blocks: every request split in two"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_dtype", [F16, E4M3], ids=["f16", "e4m3"])
@pytest.mark.parametrize("lengths", ["equal", "near-equal"])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_stream_deal(workspace, monkeypatch, use_tensor_cores, lengths, kv_dtype):
    """The stream deal (TFO_DECODE_STREAM=1, decode_order.cpp's stream_decode_items): the rows of
    more than a round of requests cut into one stream of about equal rows per group of kv-head
    blocks, the requests cut between streams split, and those splits merged in the launch, run twice
    (the launch leaves its merge counters at zero for the next)."""
    monkeypatch.setenv("TFO_DECODE_STREAM", "1")
    hq, hkv, d, dtype = 32, 8, 128, F16
    grid = flashinfer._ops.decode_grid_blocks(dtype, kv_dtype, d, hq, hkv, use_tensor_cores)
    assert grid > 0
    batch = grid // hkv + 23
    gen = torch.Generator().manual_seed(batch)
    kv_lens = [1000] * batch if lengths == "equal" else [int(x) for x in torch.randint(900, 1100, (batch,), generator=gen)]
    P = Paged(kv_lens, 16, hkv, d, kv_dtype, "NHD")
    q = torch.randn(batch, hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype)
    assert w._plan.task_blocks == grid // hkv * hkv and _splits(w) > 0, "a stream plan: streams cut requests"
    fp8 = kv_dtype in FP8
    k_scale, v_scale = (0.7, 1.9) if fp8 else (None, None)
    scales = dict(k_scale=k_scale, v_scale=v_scale) if fp8 else {}
    r_out, r_lse = P.reference(q, k_scale, v_scale)
    for _ in range(2):
        _check(w, q, P, r_out, r_lse, dtype, **scales)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_climbing_maxima(workspace, use_tensor_cores):
    """Scores whose running maxima creep up over the tiles and then jump
    (reference.climbing_scores): on NVIDIA both kernels rescale O only once a maximum passes
    the one in use by more than online_softmax.h's slack, and must stay exact. Three
    requests on the whole grid: split, so the partial rows and their merge see it too."""
    kv_lens, hq, hkv, d, dtype = [3000, 700, 1500], 32, 8, 128, F16
    pairs = [ref.climbing_scores(1, n, hq, hkv, d, dtype) for n in kv_lens]
    q = torch.cat([p[0] for p in pairs]).to(DEV)
    P = Paged(kv_lens, 16, hkv, d, dtype, "NHD", ks=[p[1] for p in pairs])
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert _splits(w) > 0, "the requests must be split"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_lens", [[32768], [5, 300, 2000] * 40], ids=["split", "unsplit"])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_unaligned_out(workspace, kv_lens, use_tensor_cores):
    """An out whose rows lie 129 elements apart (a view of a wider buffer): most rows start off
    a 16-byte boundary, where the kernels store their 8-column groups element by element instead
    of as one 16-byte store (decode_common.h's store_output8); split and unsplit requests against
    the float64 reference, and the column past head_dim stays untouched."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    P = Paged(kv_lens, 16, hkv, d, dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert (_splits(w) > 0) == (len(kv_lens) == 1), "batch 1 at 32k splits, 120 requests do not"
    r_out, r_lse = P.reference(q)
    _check(w, q, P, r_out, r_lse, dtype, out_row_pad=1)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_split_merge_in_launch(workspace, use_tensor_cores):
    """Split requests merge inside the decode launch: the last task of a (request, kv head) to
    finish combines the splits, counted in the workspace's split counters. The counters are back
    at zero after every run, so back-to-back runs with fresh queries stay right; without counters
    the operator merges in a second launch, with the same result."""
    kv_lens, hq, hkv, d, dtype = [9000, 3, 5000, 700], 32, 8, 128, F16
    P = Paged(kv_lens, 16, hkv, d, dtype, "NHD")
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert _splits(w) > 0, "the long requests must be split"
    counters = w._plan.split_counters
    for _ in range(3):
        q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
        r_out, r_lse = P.reference(q)
        _check(w, q, P, r_out, r_lse, dtype)
        assert int(counters.count_nonzero()) == 0, "split counters must be zero after a run"
    plan = w._plan
    out = torch.full(q.shape, float("nan"), dtype=dtype, device=DEV)
    lse = torch.full(q.shape[:2], float("nan"), dtype=torch.float32, device=DEV)
    no_counters = torch.zeros(0, dtype=torch.int32, device=DEV)
    flashinfer._ops.ops.batch_decode_paged_run(
        q, P.cache[:, 0], P.cache[:, 1], w._kv_indptr, w._kv_indices, w._kv_last_page_len, plan.plan_info,
        plan.partial_o, plan.partial_lse, no_counters, out, lse, 0, -1, d ** -0.5, 0.0, 1.0, 1.0, use_tensor_cores)
    torch.cuda.synchronize()
    ref.assert_attention_close(out.cpu(), r_out, dtype, "out (merge launch):")
    ref.assert_lse_close(lse.cpu(), r_lse, "lse (merge launch):")


@pytest.mark.skipif(torch.version.hip is not None, reason="AMD merges split requests in a launch of their own")
@pytest.mark.parametrize("kv_dtype", [F16, E4M3], ids=["f16", "e4m3"])
@pytest.mark.parametrize("kv_len, window_left", [(4096, -1), (16384, -1), (4096, 700)],
                         ids=["kv4k", "kv16k", "kv4k-window"])
def test_split_merge_by_words(workspace, kv_len, window_left, kv_dtype):
    """Batch 1's splits on the tensor-core kernel's wide shape, a task a block, merge by words
    (split_merge.h): every split's block polls the words of its share of the outputs, in a
    cooperative launch. Eager and replayed from a CUDA graph with fresh queries, with the whole
    split_counters tensor (counters, then words) back at zero after every run; the same plan
    merged by the counters alone (a split_counters without words) gives the same outputs."""
    hq, hkv, d, dtype = 32, 8, 128, F16
    if flashinfer._ops.decode_wide_tasks(dtype, kv_dtype, d, hq, hkv, True) == 0:
        pytest.skip("no wide shape on this GPU or build")
    P = Paged([kv_len], 16, hkv, d, kv_dtype, "NHD")
    w = _wrapper(workspace, "NHD", True)
    _plan(w, P, hq, hkv, d, dtype, kv_dtype, window_left=window_left)
    plan = w._plan
    multiprocessors = torch.cuda.get_device_properties(DEV).multi_processor_count
    assert _splits(w) > 1 and 0 < plan.task_blocks <= multiprocessors, "a wide launch of split tasks"
    counters = plan.split_counters
    slots = flashinfer._C.SPLIT_COUNTER_SLOTS
    assert counters.numel() >= slots + 2 * _splits(w) * hq * d, "room for the words after the counters"
    q = torch.randn(1, hq, d, dtype=dtype, device=DEV)
    out = torch.full(q.shape, float("nan"), dtype=dtype, device=DEV)
    lse = torch.full(q.shape[:2], float("nan"), dtype=torch.float32, device=DEV)
    w.run(q, P.cache, out=out, lse=lse, return_lse=True)  # loads the kernels before the capture
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            w.run(q, P.cache, out=out, lse=lse, return_lse=True)
    for replay in (False, True, False, True):
        q.copy_(torch.randn(1, hq, d, dtype=dtype, device=DEV))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        if replay:
            graph.replay()
        else:
            w.run(q, P.cache, out=out, lse=lse, return_lse=True)
        torch.cuda.synchronize()
        r_out, r_lse = P.reference(q, window_left=window_left)
        ref.assert_attention_close(out.cpu(), r_out, dtype, f"out (replay {replay}):")
        ref.assert_lse_close(lse.cpu(), r_lse, f"lse (replay {replay}):")
        assert int(counters.count_nonzero()) == 0, "counters and words must be zero after a run"
    by_counters = torch.full(q.shape, float("nan"), dtype=dtype, device=DEV)
    counters_lse = torch.full(q.shape[:2], float("nan"), dtype=torch.float32, device=DEV)
    flashinfer._ops.ops.batch_decode_paged_run(
        q, P.cache[:, 0], P.cache[:, 1], w._kv_indptr, w._kv_indices, w._kv_last_page_len, plan.plan_info,
        plan.partial_o, plan.partial_lse, counters[:slots], by_counters, counters_lse, 0, window_left, d ** -0.5,
        0.0, 1.0, 1.0, True, plan.task_blocks)
    torch.cuda.synchronize()
    torch.testing.assert_close(by_counters, out, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(counters_lse, lse, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not device_has_pdl(), reason="programmatic dependent launch: NVIDIA sm_90+")
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_pdl_launches_wait_for_the_kernel_before(workspace, use_tensor_cores):
    """enable_pdl=True: a decode launch may begin while the kernel before it finishes, and must
    wait for it before reading. A chain of steps whose q is computed by a kernel from the step
    before's output, eager and captured in a CUDA graph (outputs poisoned before the replay), is
    bitwise the chain without PDL; its first step matches the float64 reference; the merge launch
    (used without split counters) waits for the decode launch's partial rows the same way."""
    kv_lens, hq, hkv, d, dtype = [9000, 3, 5000, 700], 32, 8, 128, F16
    P = Paged(kv_lens, 16, hkv, d, dtype, "NHD")
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype)
    assert _splits(w) > 0, "the long requests must be split"
    q0 = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    chain = attention_chain(lambda q, pdl: w.run(q, P.cache, enable_pdl=pdl), q0)
    want = [o.clone() for o in chain(False)]
    r_out, _ = P.reference(q0)
    ref.assert_attention_close(want[0].cpu(), r_out, dtype, "out (step 0):")
    assert_pdl_chain_matches(chain, want)
    plan = w._plan
    out = torch.full(q0.shape, float("nan"), dtype=dtype, device=DEV)
    q = q0 * 1  # written by the kernel right before the decode launch
    no_counters = torch.zeros(0, dtype=torch.int32, device=DEV)
    flashinfer._ops.ops.batch_decode_paged_run(
        q, P.cache[:, 0], P.cache[:, 1], w._kv_indptr, w._kv_indices, w._kv_last_page_len, plan.plan_info,
        plan.partial_o, plan.partial_lse, no_counters, out, None, 0, -1, d ** -0.5, 0.0, 1.0, 1.0,
        use_tensor_cores, 0, True)
    torch.cuda.synchronize()
    ref.assert_attention_close(out.cpu(), r_out, dtype, "out (merge launch):")


@pytest.mark.skipif(not device_has_pdl(), reason="programmatic dependent launch: NVIDIA sm_90+")
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
@pytest.mark.parametrize("kv_lens", [[4096], [9000, 3, 5000, 700]], ids=["bs1", "bs4-split"])
def test_pdl_decode_reads_page_ids_after_the_wait(workspace, use_tensor_cores, kv_lens):
    """With enable_pdl=True a decode block reads its schedule before it waits for the kernel
    before it (the schedule is plan()'s upload, which no kernel writes), but the index arrays
    only after the wait. Here the page ids are device int32 arrays that run() uses in place,
    another page order sits in them until a kernel right before each decode launch writes the
    planned one (pdl_chain.late_copy: it lets the decode launch begin at once and writes late,
    so a read before the wait sees the other order), and each step's q comes from the step
    before's output; eager and captured in a CUDA graph, the chain is bitwise the chain without
    PDL, and its first step matches the float64 reference."""
    pytest.importorskip("triton")
    hq, hkv, d, page_size = 32, 8, 128, 16
    P = Paged(kv_lens, page_size, hkv, d, F16, "NHD")
    planned = P.indices.to(DEV)
    page_ids = planned.clone()
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    w.plan(P.indptr.to(DEV), page_ids, P.last.to(DEV), hq, hkv, d, page_size, q_data_type=F16, kv_data_type=F16)
    assert w._kv_indices.data_ptr() == page_ids.data_ptr(), "run() must read the caller's page ids in place"

    def run(q, pdl):
        late_copy(planned, page_ids)  # the decode launch reads what this kernel writes
        return w.run(q, P.cache, enable_pdl=pdl)

    def poison():
        page_ids.copy_(planned.flip(0))

    q0 = torch.randn(len(kv_lens), hq, d, dtype=F16, device=DEV)
    chain = attention_chain(run, q0)
    poison()
    want = [o.clone() for o in chain(False)]
    r_out, _ = P.reference(q0)
    ref.assert_attention_close(want[0].cpu(), r_out, F16, "out (step 0):")
    assert_pdl_chain_matches(chain, want, poison)


@pytest.mark.parametrize("kv_dtype", FP8, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("q_dtype", [F16, BF16])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_fp8(workspace, kv_dtype, q_dtype, use_tensor_cores):
    kv_lens, hq, hkv, d = [3, 100, 2049, 600, 16], 16, 4, 128
    k_scale, v_scale = 0.7, 1.9
    P = Paged(kv_lens, 16, hkv, d, kv_dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=q_dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, q_dtype, kv_dtype)
    r_out, r_lse = P.reference(q, k_scale, v_scale)
    _check(w, q, P, r_out, r_lse, q_dtype, k_scale=k_scale, v_scale=v_scale)


@pytest.mark.parametrize(
    "sm_scale,logits_soft_cap,window_left",
    [(0.3, None, -1), (None, 30.0, -1), (None, None, 100), (0.2, 5.0, 700)],
)
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_batch_decode_options(workspace, sm_scale, logits_soft_cap, window_left, use_tensor_cores):
    kv_lens, hq, hkv, d, dtype = [50, 1500, 6000], 16, 4, 128, F16
    P = Paged(kv_lens, 16, hkv, d, dtype, "NHD")
    q = torch.randn(len(kv_lens), hq, d, dtype=dtype, device=DEV)
    w = _wrapper(workspace, "NHD", use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype, sm_scale=sm_scale, logits_soft_cap=logits_soft_cap,
          window_left=window_left)
    r_out, r_lse = P.reference(q, sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    _check(w, q, P, r_out, r_lse, dtype)


@pytest.mark.parametrize("kv_len", [1, 100, 32768])
@pytest.mark.parametrize("hq,hkv", [(8, 8), (32, 8), (16, 2)])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_single_decode(kv_len, hq, hkv, kv_layout, use_tensor_cores):
    d, dtype = 128, F16
    q = torch.randn(hq, d, dtype=dtype)
    k, v = _rand_kv(kv_len, hkv, d, dtype), _rand_kv(kv_len, hkv, d, dtype)
    r_out, r_lse = ref.decode_ref(q, k, v)
    kd, vd = ref.to_layout(k, kv_layout).to(DEV), ref.to_layout(v, kv_layout).to(DEV)
    out, lse = flashinfer.single_decode_with_kv_cache(q.to(DEV), kd, vd, kv_layout=kv_layout,
                                                      use_tensor_cores=use_tensor_cores, return_lse=True)
    ref.assert_attention_close(out.cpu(), r_out, dtype)
    ref.assert_lse_close(lse.cpu(), r_lse)


@pytest.mark.parametrize("kv_dtype", [E4M3, E5M2], ids=["e4m3", "e5m2"])
@pytest.mark.parametrize("head_dim", [64, 256])
@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_single_decode_fp8_head_dims(kv_dtype, head_dim, dtype, use_tensor_cores):
    hq, hkv, kv_len = 8, 2, 3000
    q = torch.randn(hq, head_dim, dtype=dtype)
    k, v = _rand_kv(kv_len, hkv, head_dim, kv_dtype), _rand_kv(kv_len, hkv, head_dim, kv_dtype)
    r_out, r_lse = ref.decode_ref(q, ref.dequant(k, 0.5), ref.dequant(v, 3.0), logits_soft_cap=20.0)
    out, lse = flashinfer.single_decode_with_kv_cache(q.to(DEV), k.to(DEV), v.to(DEV), k_scale=0.5, v_scale=3.0,
                                                      logits_soft_cap=20.0, use_tensor_cores=use_tensor_cores,
                                                      return_lse=True)
    ref.assert_attention_close(out.cpu(), r_out, dtype)
    ref.assert_lse_close(lse.cpu(), r_lse)


@pytest.mark.parametrize("use_tensor_cores", [False, True], ids=["simt", "mma"])
def test_cuda_graph_replay_after_replan(use_tensor_cores):
    """A captured run replays correctly for a later plan() of another batch composition that
    fits the fixed buffers (splits included), matching eager runs each time."""
    bs, hq, hkv, d, page_size, dtype = 8, 32, 8, 128, 16, F16
    max_pages = 4096
    workspace = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device=DEV)
    indptr_buf = torch.empty(bs + 1, dtype=torch.int32, device=DEV)
    indices_buf = torch.empty(max_pages, dtype=torch.int32, device=DEV)
    last_buf = torch.empty(bs, dtype=torch.int32, device=DEV)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        workspace, "NHD", use_cuda_graph=True, use_tensor_cores=use_tensor_cores,
        paged_kv_indptr_buffer=indptr_buf, paged_kv_indices_buffer=indices_buf,
        paged_kv_last_page_len_buffer=last_buf)
    eager = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty_like(workspace), "NHD",
                                                          use_tensor_cores=use_tensor_cores)
    compositions = [
        [17, 300, 1, 64, 1000, 33, 2048, 5],     # no split
        [20000, 1, 2, 3, 4, 5, 6, 7],            # one long request: split over the GPU
        [1024] * 8,
    ]
    caches = [Paged(lens, page_size, hkv, d, dtype, "NHD") for lens in compositions]
    num_pages = max(c.cache.shape[0] for c in caches)
    cache = torch.zeros(num_pages, 2, page_size, hkv, d, dtype=dtype, device=DEV)
    q = torch.randn(bs, hq, d, dtype=dtype, device=DEV)
    out = torch.empty(bs, hq, d, dtype=dtype, device=DEV)
    lse = torch.empty(bs, hq, dtype=torch.float32, device=DEV)

    def load(P):
        cache.zero_()
        cache[: P.cache.shape[0]].copy_(P.cache)
        _plan(w, P, hq, hkv, d, dtype, dtype)
        _plan(eager, P, hq, hkv, d, dtype, dtype)

    load(caches[0])
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        w.run(q, cache, out=out, lse=lse, return_lse=True)  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        w.run(q, cache, out=out, lse=lse, return_lse=True)

    for i, P in enumerate(caches):
        load(P)
        q.copy_(torch.randn(bs, hq, d, dtype=dtype, device=DEV))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        e_out, e_lse = eager.run(q, cache, return_lse=True)
        torch.cuda.synchronize()
        if i == 1:
            assert _splits(w) > 1
        torch.testing.assert_close(out, e_out, rtol=0, atol=0, msg=lambda m: f"composition {i}: {m}")
        torch.testing.assert_close(lse, e_lse, rtol=0, atol=0, msg=lambda m: f"composition {i}: {m}")
        r_out, r_lse = P.reference(q)
        ref.assert_attention_close(out.cpu(), r_out, dtype, f"composition {i}:")
        ref.assert_lse_close(lse.cpu(), r_lse, f"composition {i}:")
