"""GPU timing shared by the benchmarks: medians of CUDA-event-timed samples after warm-up.

Three ways to time the same callable, each with one pair of CUDA events per sample:
    timed        one call per sample (includes the host's launch cost of short calls)
    timed_batch  `calls` back-to-back calls per sample, divided: the GPU stays busy while the
                 host launches the next call, so the time is kernel-dominated
    graph_timed  `calls` calls captured in one CUDA graph, one replay per sample, divided:
                 no Python or launch overhead (how serving loops run decode)

and one way to time several callables against each other: interleaved_for(...) prepares each
(a graph, or back-to-back calls) and takes their samples in turn, so that a change of the GPU's
state during the measurement (its clocks and power after a heavy shape, another process) falls
on every callable alike instead of on whichever was timed first.
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


def captured(fn, calls=1):
    """fn() captured `calls` times in one CUDA graph (after warm-up runs on a side stream, as
    capture requires); returns a callable that replays the graph and holds fn. The graph
    reads and writes the memory fn's call owns (a wrapper's plan and index arrays, its output):
    were fn collected, that memory would go back to the caching allocator while the graph
    still uses it, and the replays would read whatever takes it next. The replay's `output` is
    what the last captured call returned: the memory every replay writes."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            output = fn()

    def replay(graph=graph, fn=fn):  # fn a default: kept alive as long as the replay is
        graph.replay()
    replay.output = output
    return replay


def graph_timed(fn, calls=1, iters=20):
    """Median seconds per call of fn() captured `calls` times in one CUDA graph; one replay per
    sample."""
    return timed(captured(fn, calls), iters) / calls


def back_to_back(fn, calls=10):
    """fn() warmed up; returns a callable that runs it `calls` times back to back (its `output`:
    what the last call returned)."""
    for _ in range(WARMUP):
        run_output = fn()
    torch.cuda.synchronize()

    def run():
        for _ in range(calls):
            run.output = fn()
    run.output = run_output
    return run


def interleaved_medians(samplers, iters=20, event_sample=None):
    """Median milliseconds of one run of each callable in `samplers` (name -> callable), the
    samples taken in turn: round i times every callable once, starting one further along each
    round, after one untimed round. Returns name -> median."""
    event_sample = event_sample or (lambda fn: _event_sample(fn, 1))
    names = list(samplers)
    for name in names:
        samplers[name]()
    samples = {name: [] for name in names}
    for i in range(iters):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            samples[name].append(event_sample(samplers[name]))
    return {name: _median(s) for name, s in samples.items()}


def interleaved_for(method, calls):
    """(prepare(fn) -> sampler, seconds(samplers, iters) -> name -> seconds per call, a one-line
    description) for method "graph" or "events": several callables timed against each other."""
    if method == "graph":
        prepare, how = (lambda fn: captured(fn, calls)), f"{calls} call(s) captured in one CUDA graph per sample"
    elif method == "events":
        prepare, how = (lambda fn: back_to_back(fn, calls)), f"{calls} back-to-back calls per sample"
    else:
        raise ValueError(f"unknown timing method {method!r}: graph or events")

    def seconds(samplers, iters):
        return {name: ms * 1e-3 / calls for name, ms in interleaved_medians(dict(samplers), iters).items()}
    return prepare, seconds, f"timing: {how}, CUDA events, divided; the paths' samples interleaved"


def timer_for(method, calls):
    """(timer(fn, iters) -> seconds per call, a one-line description) for method "graph" or "events"."""
    if method == "graph":
        return (lambda fn, iters: graph_timed(fn, calls, iters),
                f"timing: {calls} call(s) captured in one CUDA graph, replay timed by CUDA events, divided")
    if method == "events":
        return (lambda fn, iters: timed_batch(fn, calls, iters),
                f"timing: {calls} back-to-back calls per CUDA-event pair, divided")
    raise ValueError(f"unknown timing method {method!r}: graph or events")
