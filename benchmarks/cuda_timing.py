"""GPU timing shared by the benchmarks: medians of CUDA-event-timed samples after warm-up.

Three ways to time the same callable, each with one pair of CUDA events per sample:
    timed        one call per sample (includes the host's launch cost of short calls)
    timed_batch  `calls` back-to-back calls per sample, divided: the GPU stays busy while the
                 host launches the next call, so the time is kernel-dominated
    graph_timed  `calls` calls captured in one CUDA graph, one replay per sample, divided:
                 no Python or launch overhead (how serving loops run decode)
"""
import torch

WARMUP = 3


def _median(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2]


def _event_sample(fn, repeat):
    """Milliseconds of `repeat` back-to-back fn() calls between one pair of CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def timed(fn, iters=20):
    """Median seconds of fn() over `iters` runs, each timed by CUDA events, after 3 warm-ups."""
    return timed_batch(fn, calls=1, iters=iters)


def timed_batch(fn, calls=10, iters=20):
    """Median seconds per call: each of `iters` samples times `calls` back-to-back fn() calls
    between one pair of CUDA events and divides by `calls`; after 3 warm-ups."""
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    return _median([_event_sample(fn, calls) / calls for _ in range(iters)]) * 1e-3


def graph_timed(fn, calls=1, iters=20):
    """Median seconds per call of fn() captured `calls` times in one CUDA graph (warm-up runs
    on a side stream first, as capture requires); one replay per sample."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return timed(graph.replay, iters) / calls


def timer_for(method, calls):
    """(timer(fn, iters) -> seconds per call, a one-line description) for method "graph" or "events"."""
    if method == "graph":
        return (lambda fn, iters: graph_timed(fn, calls, iters),
                f"timing: {calls} call(s) captured in one CUDA graph, replay timed by CUDA events, divided")
    if method == "events":
        return (lambda fn, iters: timed_batch(fn, calls, iters),
                f"timing: {calls} back-to-back calls per CUDA-event pair, divided")
    raise ValueError(f"unknown timing method {method!r}: graph or events")
