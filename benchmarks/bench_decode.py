"""Batch decode over a paged KV cache on the GPU: torch_flashinfer_ops (fa2, both kernel
families) against the device's copy bandwidth and, when importable, upstream FlashInfer.

    python benchmarks/bench_decode.py [--batches 1,16,64,128,256] [--kv 1024,4096,16384]

Shapes: page size 16, 32 query / 8 kv heads, head_dim 128, fp16, every request kv_len long.
Bytes: K + V pages read + q read + out written. The ceiling is a large device-to-device copy
(bytes read + written per second). Times are medians of CUDA-event timed replays of a CUDA
graph holding one run (how serving loops run decode; no Python or launch overhead), after
warm-up, on random (never zero) inputs. Also prints plan() host time at the largest batch.
"""
import argparse
import datetime
import time

import torch

import torch_flashinfer_ops as tfo
from cuda_timing import timed

HQ, HKV, D, PAGE = 32, 8, 128, 16
DTYPE = torch.float16


def graph_timed(fn, iters=20):
    """GPU time of fn captured in a CUDA graph (as serving runs decode): no launch overhead."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, iters)


def copy_bandwidth():
    src = torch.randn(1 << 30, dtype=torch.float16, device="cuda")  # 2 GiB
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), 10)
    return 2 * src.numel() * src.element_size() / t


def upstream_runner(workspace, indptr, indices, last, q, cache):
    try:
        import flashinfer  # upstream
    except Exception:
        return None
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    w.plan(indptr, indices, last, HQ, HKV, D, PAGE, q_data_type=DTYPE, kv_data_type=DTYPE)
    return lambda: w.run(q, cache)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,16,64,128,256")
    parser.add_argument("--kv", default="1024,4096,16384")
    args = parser.parse_args()
    batches = [int(x) for x in args.batches.split(",")]
    kv_lens = [int(x) for x in args.kv.split(",")]
    ceiling = copy_bandwidth()
    print(f"# batch decode, {torch.cuda.get_device_name()}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# page {PAGE}, {HQ}/{HKV} heads, d{D}, fp16; copy ceiling {ceiling / 1e9:.0f} GB/s")
    print("| bs | kv | simt us | simt GB/s | % copy | mma us | mma GB/s | % copy | upstream us |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for kv in kv_lens:
        for bs in batches:
            pages_per = kv // PAGE
            num_pages = bs * pages_per
            cache = torch.randn(num_pages, 2, PAGE, HKV, D, dtype=DTYPE, device="cuda")
            indices = torch.randperm(num_pages, dtype=torch.int32, device="cuda")
            indptr = torch.arange(bs + 1, dtype=torch.int32, device="cuda") * pages_per
            last = torch.full((bs,), PAGE, dtype=torch.int32, device="cuda")
            q = torch.randn(bs, HQ, D, dtype=DTYPE, device="cuda")
            nbytes = cache.numel() * cache.element_size() + 2 * q.numel() * q.element_size()
            row = [str(bs), str(kv)]
            for tc in (False, True):
                w = tfo.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tc)
                w.plan(indptr, indices, last, HQ, HKV, D, PAGE, q_data_type=DTYPE, kv_data_type=DTYPE)
                out = torch.empty_like(q)
                t = graph_timed(lambda: w.run(q, cache, out=out))
                row += [f"{t * 1e6:.1f}", f"{nbytes / t / 1e9:.0f}", f"{100 * nbytes / t / ceiling:.0f}%"]
            up = upstream_runner(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"), indptr, indices, last,
                                 q, cache)
            row.append(f"{graph_timed(up) * 1e6:.1f}" if up is not None else "n/a")
            print("| " + " | ".join(row) + " |", flush=True)
            del cache
    bs = max(batches)
    indptr_h = torch.arange(bs + 1, dtype=torch.int32) * 64
    indices_h = torch.arange(bs * 64, dtype=torch.int32)
    last_h = torch.full((bs,), PAGE, dtype=torch.int32)
    w = tfo.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    for _ in range(3):
        w.plan(indptr_h, indices_h, last_h, HQ, HKV, D, PAGE, q_data_type=DTYPE)
    t0 = time.perf_counter()
    for _ in range(20):
        w.plan(indptr_h, indices_h, last_h, HQ, HKV, D, PAGE, q_data_type=DTYPE)
    print(f"# plan() at bs {bs}: {(time.perf_counter() - t0) / 20 * 1e6:.0f} us on the host")


if __name__ == "__main__":
    main()
