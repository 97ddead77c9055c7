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
