"""benchmarks/cuda_timing.py's interleaved sampling (CPU: the event timer is replaced by a clock
that drifts, as a GPU's state does after a heavy shape)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
cuda_timing = pytest.importorskip("cuda_timing")


def test_samples_taken_in_turn_with_rotating_start():
    calls = []
    samplers = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    cuda_timing.interleaved_medians(samplers, iters=3, event_sample=lambda fn: fn() or 1.0)
    assert calls[:3] == list("abc")  # the untimed round
    assert calls[3:] == list("abc") + list("bca") + list("cab")


def test_a_drifting_clock_weighs_on_every_sampler_alike():
    # Every sample costs its callable's own time plus a slowdown that decays with each sample
    # taken; timed one after the other, the first callable would take nearly all of it.
    own = {"first": 10.0, "second": 10.0, "third": 10.0}
    state = {"taken": 0}

    def event_sample(fn):
        state["taken"] += 1
        return own[fn()] + 50.0 / state["taken"]
    samplers = {name: (lambda name=name: name) for name in own}
    medians = cuda_timing.interleaved_medians(samplers, iters=21, event_sample=event_sample)
    spread = max(medians.values()) - min(medians.values())
    assert spread < 0.1 * (min(medians.values()) - 10.0) + 0.2
    assert set(medians) == set(own)


def test_median_of_each_callable_own_samples():
    seq = iter([5.0, 1.0, 6.0, 2.0, 7.0, 3.0])  # x, y, then y, x, then x, y
    samplers = {"x": lambda: None, "y": lambda: None}
    medians = cuda_timing.interleaved_medians(samplers, iters=3, event_sample=lambda fn: next(seq))
    # x's samples: 5, 2 (second round starts at y: y=6, x=2), 7; y's: 1, 6, 3
    assert medians == {"x": 5.0, "y": 3.0}


def test_unknown_method_refused():
    with pytest.raises(ValueError, match="graph or events"):
        cuda_timing.interleaved_for("wall", 10)


class _FakeGraph:
    """torch.cuda.CUDAGraph's part captured() uses: replay() reruns what ran while capturing."""
    capturing = None

    def __init__(self):
        self.recorded = []

    def replay(self):
        for fn in self.recorded:
            fn()


class _FakeCapture:
    def __init__(self, graph):
        self.graph = graph

    def __enter__(self):
        _FakeGraph.capturing = self.graph

    def __exit__(self, *exc):
        _FakeGraph.capturing = None


def _fake_cuda(monkeypatch):
    import contextlib
    torch = cuda_timing.torch
    monkeypatch.setattr(torch.cuda, "Stream", lambda: type("S", (), {"wait_stream": lambda self, other: None})())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: type("S", (), {"wait_stream": lambda self, o: None})())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _FakeCapture)


def test_a_captured_replay_keeps_the_call_and_what_it_owns_alive(monkeypatch):
    # A decode call's closure owns its wrapper (plan, index arrays) and output; the graph only
    # holds device addresses. The replay must keep the closure alive, or the graph would run on
    # freed memory (seen as impossible speeds, then a hang, once other paths reuse it).
    import gc
    import weakref
    _fake_cuda(monkeypatch)

    class Wrapper:
        runs = 0

        def run(self):
            Wrapper.runs += 1
            if _FakeGraph.capturing is not None:
                _FakeGraph.capturing.recorded.append(lambda: None)

    def make():
        wrapper = Wrapper()
        return weakref.ref(wrapper), (lambda: wrapper.run())
    alive, fn = make()
    replay = cuda_timing.captured(fn, calls=2)
    del fn
    gc.collect()
    assert alive() is not None, "the wrapper was collected while its graph can still replay"
    runs = Wrapper.runs
    assert runs == cuda_timing.WARMUP + 2  # warm-ups, then the captured calls
    replay()
    del replay
    gc.collect()
    assert alive() is None, "the replay keeps its call alive, not beyond"


def test_a_captured_replay_carries_the_output_its_calls_write(monkeypatch):
    _fake_cuda(monkeypatch)
    results = iter(["warm-up"] * cuda_timing.WARMUP + ["first", "second"])
    replay = cuda_timing.captured(lambda: next(results), calls=2)
    assert replay.output == "second"  # the last captured call's: the memory each replay writes


def _writer(out, value, writes=True):
    """A prepared call as the timers give it: running it writes `value` into its `output`."""
    def run():
        if writes:
            out.copy_(value)
    run.output = out
    return run


def _timer(samplers, iters):
    for s in samplers.values():
        s()
    return {name: 1e-6 for name in samplers}


def test_interleaved_seconds_leaves_out_a_call_whose_output_agrees_with_no_other(capsys):
    import torch
    bench_report = pytest.importorskip("bench_report")
    torch.manual_seed(0)
    truth = torch.randn(4, 8, 16).to(torch.float16)
    near = (truth.float() + 1e-4 * torch.randn(4, 8, 16)).to(torch.float16)  # another kernel's rounding
    other = torch.randn(4, 8, 16).to(torch.float16)  # another schedule's result, same statistics
    makers = {
        "ours": lambda: _writer(torch.empty_like(truth), truth),
        "peer": lambda: _writer(torch.empty_like(truth), near),
        "stale": lambda: _writer(torch.empty_like(truth), other),
        "unwritten": lambda: _writer(truth.clone(), truth, writes=False),  # a replay that ran nothing
    }
    seconds = bench_report.interleaved_seconds(makers, (lambda fn: fn, _timer), iters=3, label=" f16")
    assert seconds == {"ours": 1e-6, "peer": 1e-6, "stale": None, "unwritten": None}
    printed = capsys.readouterr().out
    assert "stale f16 failed" in printed and "agrees with no other call" in printed
    assert "unwritten f16 failed" in printed and "max |difference| nan" in printed


def test_two_disagreeing_outputs_leave_both_out_and_one_output_is_not_checked():
    import torch
    bench_report = pytest.importorskip("bench_report")
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    bad = bench_report.disagreeing_outputs({"x": _writer(torch.empty(2, 3), a), "y": _writer(torch.empty(2, 3), b)})
    assert bad == {"x": 1.0, "y": 1.0}
    assert bench_report.disagreeing_outputs({"x": _writer(torch.empty(2, 3), a)}) == {}
    assert bench_report.disagreeing_outputs({"x": lambda: None, "y": lambda: None}) == {}  # no outputs carried


def test_outputs_agree_within_rounding_and_not_across_layouts():
    import torch
    bench_report = pytest.importorskip("bench_report")
    x = torch.randn(16, 4, 8)
    assert bench_report.outputs_agree(x.to(torch.bfloat16), x)
    assert not bench_report.outputs_agree(x + 0.1 * x.abs().max(), x)
    assert not bench_report.outputs_agree(x.transpose(0, 1), x)
    assert not bench_report.outputs_agree(torch.full_like(x, float("nan")), x)


def test_an_unchecked_call_is_timed_in_turn_but_not_compared():
    import torch
    bench_report = pytest.importorskip("bench_report")
    truth = torch.randn(4, 8, 16).to(torch.float16)
    makers = {
        "ours": lambda: _writer(torch.empty_like(truth), truth),
        "peer": lambda: _writer(torch.empty_like(truth), truth),
        "beside": lambda: _writer(torch.empty(2, 8, 16, dtype=torch.float16), truth[:2]),  # another shape
    }
    seconds = bench_report.interleaved_seconds(makers, (lambda fn: fn, _timer), iters=3, unchecked=("beside",))
    assert seconds == {"ours": 1e-6, "peer": 1e-6, "beside": 1e-6}
    # Compared, the other shape agrees with no output and its time is left out.
    assert bench_report.interleaved_seconds(makers, (lambda fn: fn, _timer), iters=3)["beside"] is None
