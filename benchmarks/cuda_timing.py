"""GPU timing shared by the benchmarks: the median of CUDA-event-timed runs after warm-up."""
import torch


def timed(fn, iters=20):
    """Median seconds of fn() over `iters` runs, each timed by CUDA events, after 3 warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2] * 1e-3
