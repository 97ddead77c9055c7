"""The decode benchmark's inputs, on the host: the uneven batches' kv lengths (seeded, in their
stated ranges) and the paged layout that holds any list of lengths."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
bench_decode = pytest.importorskip("bench_decode")


@pytest.mark.parametrize("name", sorted(bench_decode.UNEVEN_LENGTHS))
def test_uneven_lengths_repeat_for_a_batch_size_and_differ_across_sizes(name):
    a, b = bench_decode.uneven_kv_lens(name, 256), bench_decode.uneven_kv_lens(name, 256)
    assert torch.equal(a, b) and len(a) == 256
    assert not torch.equal(bench_decode.uneven_kv_lens(name, 128), a[:128])
    assert int(a.min()) >= 1 and len(set(a.tolist())) > 100  # uneven, and never empty


def test_uniform_lengths_span_their_range():
    lens = bench_decode.uneven_kv_lens("uniform", 4096)
    assert int(lens.min()) >= 64 and int(lens.max()) <= 8192
    assert int(lens.min()) < 200 and int(lens.max()) > 8000


def test_lognormal_lengths_are_heavy_tailed_and_capped():
    lens = bench_decode.uneven_kv_lens("lognormal", 4096).double()
    assert int(lens.max()) <= 32768
    assert 900 < float(lens.median()) < 1400  # e^7 ~ 1097
    assert float(lens.max()) > 10 * float(lens.median())


@pytest.mark.parametrize("kv_lens", [[1, 16, 17, 33], [5000, 64, 3], [16] * 4])
def test_paged_layout_holds_each_request_exactly(kv_lens):
    lens = torch.tensor(kv_lens)
    indptr, last = bench_decode.paged_layout(lens)
    assert indptr.dtype == torch.int32 and last.dtype == torch.int32 and int(indptr[0]) == 0
    pages = (indptr[1:] - indptr[:-1]).tolist()
    for n, pg, lp in zip(kv_lens, pages, last.tolist()):
        assert 1 <= lp <= bench_decode.PAGE and (pg - 1) * bench_decode.PAGE + lp == n


def test_uneven_arguments_are_checked():
    args = bench_decode.parse_args(["--out", "x", "--uneven", "lognormal", "--uneven-batches", "64,512"])
    assert args.uneven == ["lognormal"] and args.uneven_batches == [64, 512]
    assert bench_decode.parse_args(["--out", "x", "--uneven", ""]).uneven == []
    with pytest.raises(SystemExit):
        bench_decode.parse_args(["--out", "x", "--uneven", "zipf"])


def test_query_dtype_sets_the_default_16_bit_cache_and_refuses_another():
    args = bench_decode.parse_args(["--out", "x", "--q-dtype", "bfloat16"])
    assert args.q_dtype == torch.bfloat16 and args.kv_dtypes == [torch.bfloat16, torch.float8_e4m3fn]
    args = bench_decode.parse_args(["--out", "x"])
    assert args.q_dtype == torch.float16 and args.kv_dtypes == [torch.float16, torch.float8_e4m3fn]
    with pytest.raises(SystemExit):
        bench_decode.parse_args(["--out", "x", "--q-dtype", "bfloat16", "--kv-dtypes", "float16"])


class _Wrapper:
    """A stand-in for a library's BatchDecodeWithPagedKVCacheWrapper: records its workspace and
    the order of plan / run calls."""

    def __init__(self, events, lib, workspace, layout, use_tensor_cores, backend):
        self.events, self.name = events, f"{lib}-{'mma' if use_tensor_cores else 'simt'}"
        self.workspace = workspace
        events.append(("new", self.name, workspace.data_ptr()))

    def plan(self, *args, **kwargs):
        self.events.append(("plan", self.name))

    def run(self, q, cache, out=None, **kwargs):
        self.events.append(("run", self.name))
        return self.name


def _lib(events, name):
    from types import SimpleNamespace
    return SimpleNamespace(BatchDecodeWithPagedKVCacheWrapper=lambda *a, **k: _Wrapper(events, name, *a, **k))


def test_bench_inputs_plans_every_path_before_timing_each_in_its_own_workspace():
    from types import SimpleNamespace
    events = []
    libs = {"ours": _lib(events, "ours"), "flashinfer": _lib(events, "flashinfer")}
    workspaces = {p: torch.zeros(16, dtype=torch.uint8) for p in bench_decode.PATHS}
    x = SimpleNamespace(kv_dtype=torch.float16, cache=torch.zeros(2, 2, dtype=torch.float16),
                        indices=None, indptr=None, last=None, q=torch.zeros(1, 2, dtype=torch.float16))
    prepared = []

    def prepare(fn):
        prepared.append(fn)
        return fn

    def seconds_of(samplers, iters):
        events.append(("timing", tuple(samplers)))
        return {name: (i + 1) * 1e-6 for i, (name, sampler) in enumerate(samplers.items()) if sampler() == name}

    row = bench_decode.bench_inputs(libs, workspaces, x, (prepare, seconds_of), ceiling=None)
    assert len(prepared) == 4
    news = [e for e in events if e[0] == "new"]
    assert [e[1] for e in news] == list(bench_decode.PATHS)
    assert len({e[2] for e in news}) == 4  # one workspace per path: a plan lives in its workspace
    assert events.index(("timing", bench_decode.PATHS)) > max(i for i, e in enumerate(events) if e[0] == "plan")
    assert row["us"] == {p: pytest.approx(i + 1.0) for i, p in enumerate(bench_decode.PATHS)}


def test_bench_inputs_without_upstream_times_ours_alone():
    from types import SimpleNamespace
    events = []
    libs = {"ours": _lib(events, "ours")}
    workspaces = {p: torch.zeros(16, dtype=torch.uint8) for p in bench_decode.PATHS[:2]}
    x = SimpleNamespace(kv_dtype=torch.float16, cache=torch.zeros(2, 2, dtype=torch.float16),
                        indices=None, indptr=None, last=None, q=torch.zeros(1, 2, dtype=torch.float16))
    row = bench_decode.bench_inputs(libs, workspaces, x,
                                    (lambda fn: fn, lambda s, iters: {n: 1e-6 for n in s}), ceiling=None)
    assert row["us"]["ours-mma"] == pytest.approx(1.0) and row["us"]["flashinfer-mma"] is None


def test_a_forced_kv_chunk_reaches_our_plan_and_keeps_the_attention(monkeypatch):
    """--ours-kv-chunk: decode_call plans ours with the given chunk instead of the split policy
    (here on the host backend): the schedule is asked for that chunk, the plan splits, and the
    output stays that of the policy's plan."""
    import torch_flashinfer_ops as tfo
    from types import SimpleNamespace
    from torch_flashinfer_ops._plan import Workspace
    asked = []
    schedule = Workspace.plan

    def recording(self, *a, **kw):
        asked.append(kw.get("kv_chunk_size"))
        plan = schedule(self, *a, **kw)
        asked.append(int(self.plan_host[4]))  # plan_info header: partial rows
        return plan
    monkeypatch.setattr(Workspace, "plan", recording)
    torch.manual_seed(0)
    kv_lens = torch.tensor([300, 40, 129])
    indptr, last = bench_decode.paged_layout(kv_lens)
    pages = int(indptr[-1])
    x = SimpleNamespace(kv_dtype=torch.float16, indptr=indptr, last=last,
                        indices=torch.randperm(pages).to(torch.int32),
                        cache=torch.randn(pages, 2, bench_decode.PAGE, bench_decode.HKV, bench_decode.D).half(),
                        q=torch.randn(3, bench_decode.HQ, bench_decode.D).half())
    outs = []
    for plan_kw in (None, {"kv_chunk_size": 64}):
        workspace = torch.zeros(64 << 20, dtype=torch.uint8)
        outs.append(bench_decode.decode_call(tfo, False, x, workspace, plan_kw)().clone())
    assert asked[0] is None and asked[2] == 64
    assert asked[3] > 0  # the forced chunk split the requests of 300 and 129 rows
    assert torch.allclose(outs[0].float(), outs[1].float(), atol=2e-3, rtol=2e-3)
    assert bench_decode.parse_args(["--out", "x", "--ours-kv-chunk", "0"]).ours_kv_chunk == 0
    with pytest.raises(SystemExit):
        bench_decode.parse_args(["--out", "x", "--ours-kv-chunk", "-1"])


def test_a_forced_launch_size_reaches_our_run(monkeypatch):
    """--ours-task-blocks: decode_call gives our run() a launch of that many blocks in place of
    the plan's, and leaves the plan's size without it."""
    import torch_flashinfer_ops as tfo
    from types import SimpleNamespace
    seen = []
    run = tfo.BatchDecodeWithPagedKVCacheWrapper.run

    def recording(self, *a, **kw):
        seen.append(self._plan.task_blocks)
        return run(self, *a, **kw)
    monkeypatch.setattr(tfo.BatchDecodeWithPagedKVCacheWrapper, "run", recording)
    kv_lens = torch.tensor([300, 40])
    indptr, last = bench_decode.paged_layout(kv_lens)
    pages = int(indptr[-1])
    x = SimpleNamespace(kv_dtype=torch.float16, indptr=indptr, last=last, indices=torch.arange(pages, dtype=torch.int32),
                        cache=torch.randn(pages, 2, bench_decode.PAGE, bench_decode.HKV, bench_decode.D).half(),
                        q=torch.randn(2, bench_decode.HQ, bench_decode.D).half())
    for blocks in (None, 7):
        bench_decode.decode_call(tfo, False, x, torch.zeros(64 << 20, dtype=torch.uint8), None, blocks)()
    assert seen == [0, 7]  # the host plan's size is 0 (no GPU grid); forced: 7
    assert bench_decode.parse_args(["--out", "x", "--ours-task-blocks", "128"]).ours_task_blocks == 128
    with pytest.raises(SystemExit):
        bench_decode.parse_args(["--out", "x", "--ours-task-blocks", "0"])


def test_the_layout_reaches_both_the_cache_and_the_wrapper(monkeypatch):
    """--layout HND: decode_call plans the wrapper with the caches' layout, so that an HND cache
    (the NHD one's rows, each kv head's page contiguous) gives the NHD cache's attention (here on
    the host backend); planned as NHD, run() refuses it (its page would read as 8 rows of 16 heads)."""
    import torch_flashinfer_ops as tfo
    from types import SimpleNamespace
    torch.manual_seed(0)
    kv_lens = torch.tensor([70, 33])
    indptr, last = bench_decode.paged_layout(kv_lens)
    pages = int(indptr[-1])
    nhd = torch.randn(pages, 2, bench_decode.PAGE, bench_decode.HKV, bench_decode.D).half()
    q = torch.randn(2, bench_decode.HQ, bench_decode.D).half()
    outs = {}
    for layout, cache in (("NHD", nhd), ("HND", nhd.transpose(2, 3).contiguous())):
        monkeypatch.setitem(bench_decode.CACHE, "layout", layout)
        x = SimpleNamespace(kv_dtype=torch.float16, indptr=indptr, last=last,
                            indices=torch.arange(pages, dtype=torch.int32), cache=cache, q=q)
        outs[layout] = bench_decode.decode_call(tfo, False, x, torch.zeros(64 << 20, dtype=torch.uint8))().clone()
    assert torch.allclose(outs["NHD"].float(), outs["HND"].float(), atol=2e-3, rtol=2e-3)
    monkeypatch.setitem(bench_decode.CACHE, "layout", "NHD")
    x.cache = nhd.transpose(2, 3).contiguous()
    with pytest.raises(ValueError, match="page_size/num_kv_heads/head_dim"):
        bench_decode.decode_call(tfo, False, x, torch.zeros(64 << 20, dtype=torch.uint8))()
    assert bench_decode.parse_args(["--out", "x"]).layout == "NHD"
    assert bench_decode.parse_args(["--out", "x", "--layout", "HND"]).layout == "HND"
    with pytest.raises(SystemExit):
        bench_decode.parse_args(["--out", "x", "--layout", "NDH"])


def test_distinct_caches_keep_every_read_out_of_l2():
    """--cold-caches: between two reads of one cache the others move at least twice the L2's
    bytes; a cache that large alone is one; the budget caps the count."""
    mb, l2 = 1 << 20, 50 << 20
    for size in (4 * mb, 17 * mb, 33 * mb, 99 * mb):
        n = bench_decode.distinct_caches(size, l2, 1 << 40)
        assert (n - 1) * size >= 2 * l2 and (n - 2) * size < 2 * l2
    assert bench_decode.distinct_caches(100 * mb, l2, 1 << 40) == 1
    assert bench_decode.distinct_caches(4 * mb, l2, 10 * mb) == 2
    assert bench_decode.distinct_caches(4 * mb, l2, 3 * mb) == 1


def test_a_call_over_several_caches_reads_each_in_turn():
    from types import SimpleNamespace
    seen = []

    class Wrapper(_Wrapper):
        def run(self, q, cache, out=None, **kwargs):
            seen.append(cache.data_ptr())
            return out
    lib = SimpleNamespace(BatchDecodeWithPagedKVCacheWrapper=lambda *a, **k: Wrapper([], "ours", *a, **k))
    caches = [torch.zeros(2, 2, dtype=torch.float16) for _ in range(3)]
    x = SimpleNamespace(kv_dtype=torch.float16, cache=caches[0], caches=caches, indices=None, indptr=None,
                        last=None, q=torch.zeros(1, 2, dtype=torch.float16))
    call = bench_decode.decode_call(lib, True, x, torch.zeros(16, dtype=torch.uint8))
    outs = {call().data_ptr() for _ in range(7)}
    assert seen == [c.data_ptr() for c in caches] * 2 + [caches[0].data_ptr()]
    assert len(outs) == 1  # one out, as the timing's output check reads


def test_row_timing_holds_a_call_per_cache_in_a_sample():
    mb = 1 << 20
    cold = bench_decode.RowTiming("graph", 10, True, 50 * mb, 1 << 40)
    timer, caches, calls = cold(4 * mb)
    assert caches == 26 and calls == 26 and len(timer) == 2
    assert cold(17 * mb)[1:] == (7, 10)
    assert cold(4 * mb)[0] is timer  # one timer per calls count
    warm = bench_decode.RowTiming("graph", 10, False, 50 * mb, 1 << 40)
    assert warm(4 * mb)[1:] == (1, 10)
    assert bench_decode.parse_args(["--out", "x", "--cold-caches"]).cold_caches
