"""The prefill benchmark's batch inputs and FLOP counts, on the host: the uneven batches' causal
pair count against a count of the mask, and its paged and ragged inputs describing the same
requests (both wrappers, run here on the CPU path, see the same lengths)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
bench_prefill = pytest.importorskip("bench_prefill")


@pytest.mark.parametrize("qo_lens,kv_lens", [([3, 20, 1], [40, 20, 17]), ([16, 50], [300, 50])])
def test_causal_pairs_count_the_kept_mask_entries(qo_lens, kv_lens):
    kept = 0
    for qo, kv in zip(qo_lens, kv_lens):
        i = torch.arange(qo).unsqueeze(1)
        j = torch.arange(kv).unsqueeze(0)
        kept += int((j <= i + kv - qo).sum())
    assert bench_prefill.causal_pairs(qo_lens, kv_lens) == kept


@pytest.mark.parametrize("head_dim", [128, 256])
def test_uneven_inputs_page_the_ragged_requests(head_dim):
    import torch_flashinfer_ops as tfo

    qo_lens, kv_lens = [3, 20, 1], [40, 20, 17]
    x = bench_prefill.uneven_inputs(qo_lens, kv_lens, torch.float16, device="cpu", head_dim=head_dim)
    assert x.indptr.tolist() == [0, 3, 23, 24] and x.kv_indptr.tolist() == [0, 40, 60, 77]
    assert x.q.shape[-1] == x.k.shape[-1] == x.kv_cache.shape[-1] == head_dim
    # Write the ragged K/V into the pages the paged inputs name: both wrappers must then agree.
    page_size = bench_prefill.PAGE
    for r, kv in enumerate(kv_lens):
        pages = x.page_indices[x.page_indptr[r]:x.page_indptr[r + 1]].long()
        assert len(pages) == -(-kv // page_size) and int(x.last_page_len[r]) == kv - (len(pages) - 1) * page_size
        for t in range(kv):
            page, slot = pages[t // page_size], t % page_size
            x.kv_cache[page, 0, slot] = x.k[x.kv_indptr[r] + t]
            x.kv_cache[page, 1, slot] = x.v[x.kv_indptr[r] + t]
    paged = bench_prefill.wrapper_call(tfo, "paged", x, True)()
    ragged = bench_prefill.wrapper_call(tfo, "ragged", x, True)()
    torch.testing.assert_close(paged, ragged)


def test_batch_shapes_and_head_dims_from_the_command_line():
    args = bench_prefill.parse_args(["--out", "x", "--batches", "2x64,1x128", "--batch-dims", "128,256"])
    assert args.batches == [(2, 64), (1, 128)] and args.batch_dims == [128, 256]
    configs = list(bench_prefill.batch_configs(args.batches, args.batch_dims))
    assert len(configs) == 2 * 2 * 2 * 2 and {c[-1] for c in configs} == {128, 256}
    assert bench_prefill.parse_args(["--out", "x", "--batches", ""]).batches == []
    assert bench_prefill.parse_args(["--out", "x"]).batch_dims == [128, 256]
    assert bench_prefill.parse_args(["--out", "x", "--batch-dims", ""]).batch_dims == []
    with pytest.raises(SystemExit):
        bench_prefill.parse_args(["--out", "x", "--batch-dims", "96"])


def test_timing_method_from_the_command_line():
    assert bench_prefill.parse_args(["--out", "x"]).timing == "events"
    args = bench_prefill.parse_args(["--out", "x", "--timing", "graph", "--calls", "4"])
    assert (args.timing, args.calls) == ("graph", 4)
    for bad in (["--timing", "cupti"], ["--calls", "0"]):
        with pytest.raises(SystemExit):
            bench_prefill.parse_args(["--out", "x"] + bad)


def test_measure_row_prepares_every_call_before_timing_them_together():
    events = []

    def make(name):
        def build():
            events.append(("build", name))
            return lambda: name
        return build

    def failing_build():
        raise RuntimeError("no kernel for this shape")

    def prepare(fn):
        events.append(("prepare", fn()))
        return fn

    def seconds_of(samplers, iters):
        events.append(("timing", tuple(samplers), iters))
        return {name: {"ours": 2e-3, "peer": 4e-3}[sampler()] for name, sampler in samplers.items()}

    makers = {"ours": make("ours"), "missing": None, "broken": failing_build, "peer": make("peer")}
    tflops = bench_prefill.measure_row(makers, 8e9, (prepare, seconds_of), 30)
    assert tflops == {"ours": pytest.approx(4.0), "missing": None, "broken": None, "peer": pytest.approx(2.0)}
    assert events[-1] == ("timing", ("ours", "peer"), 30)  # one timing of both, after every build
    assert [e[0] for e in events[:-1]] == ["build", "prepare", "build", "prepare"]


def test_measure_row_with_nothing_to_time():
    def seconds_of(samplers, iters):
        raise AssertionError("nothing to time")
    assert bench_prefill.measure_row({"ours": None}, 1.0, (lambda fn: fn, seconds_of), 10) == {"ours": None}


def test_a_batch_row_times_the_single_reference_in_turn_and_keeps_it_out_of_the_peers():
    import torch_flashinfer_ops as tfo

    x = bench_prefill.uneven_inputs([8, 8], [8, 8], torch.float16, device="cpu")
    order = []

    def seconds_of(samplers, iters):
        order.append(list(samplers))
        return {"ours": 2e-3, bench_prefill.SINGLE_BESIDE: 1e-3}  # 8e9 and 4e9 FLOPs: 4 TFLOP/s each

    beside = (lambda: (lambda: torch.zeros(1)), 4.0e9)
    row, make_ours = bench_prefill.wrapper_row(tfo, None, "ragged", x, False, 8.0e9, (lambda fn: fn, seconds_of), 3,
                                               {}, "ragged", single=beside)
    assert order == [["ours", bench_prefill.SINGLE_BESIDE]]  # one set of samples, taken in turn
    assert row["tflops"] == {"ours": pytest.approx(4.0), bench_prefill.BATCH_PEER: None}
    assert row["single_tflops"] == pytest.approx(4.0)
    row, _ = bench_prefill.wrapper_row(tfo, None, "ragged", x, False, 8.0e9, (lambda fn: fn, seconds_of), 3, {},
                                       "ragged")
    assert "single_tflops" not in row
