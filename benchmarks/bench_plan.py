"""Host cost of plan(): the per-step work a serving loop pays once per batch.

Bar (DESIGN.md): < 100 us at batch 256. Prints the median over repeated plans of a decode
batch and a prefill batch with uneven lengths (page 16, 32/8 heads, d128), on the device
given (cpu or cuda; the schedule is built on the host either way). With --device cuda the
index arrays are given on the host (as serving loops build them) and on the GPU, in turn."""
import argparse
import json
import statistics
import time

import torch

from bench_report import import_ours


def _batch(bs, page_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    kv_lens = torch.randint(1, 4096, (bs,), generator=g)
    pages = (kv_lens + page_size - 1) // page_size
    indptr = torch.zeros(bs + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(pages, 0)
    indices = torch.randperm(int(indptr[-1]), generator=g).to(torch.int32)
    last = ((kv_lens - 1) % page_size + 1).to(torch.int32)
    return indptr, indices, last


def _median_us(fn, repeat):
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def _profile_decode_plan(flashinfer, device, arrays_on, n):
    """cProfile over n decode plans at batch 256: the calls that hold the host time."""
    import cProfile
    import pstats

    indptr, indices, last = (t.to(arrays_on) for t in _batch(256, 16))
    ws = torch.empty(128 << 20, dtype=torch.uint8, device=device)
    decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
    for _ in range(20):
        decode.plan(indptr, indices, last, 32, 8, 128, 16)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        decode.plan(indptr, indices, last, 32, 8, 128, 16)
    profiler.disable()
    print(f"# cProfile of {n} decode plans at bs 256 on {device}, index arrays on {arrays_on} "
          "(cumulative seconds over all plans)")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N decode plans at batch 256 (cProfile) and print the 25 "
                             "costliest calls by cumulative time: where the host time goes")
    args = parser.parse_args()
    flashinfer = import_ours()
    results = []
    arrays_on = ["cpu", args.device] if args.device != "cpu" else ["cpu"]
    for where in arrays_on:
        for bs in (1, 16, 64, 256):
            indptr, indices, last = (t.to(where) for t in _batch(bs, 16))
            ws = torch.empty(128 << 20, dtype=torch.uint8, device=args.device)
            decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
            us = _median_us(lambda: decode.plan(indptr, indices, last, 32, 8, 128, 16), args.repeat)
            results.append({"op": "decode_plan", "arrays": where, "batch": bs, "us": us})
            qo = (torch.arange(bs + 1, dtype=torch.int32) * 8).to(where)
            prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
            us = _median_us(lambda: prefill.plan(qo, indptr, indices, last, 32, 8, 128, 16, causal=True),
                            args.repeat)
            results.append({"op": "prefill_plan", "arrays": where, "batch": bs, "us": us})
    for r in results:
        bar = " (bar: < 100 us)" if r["batch"] == 256 else ""
        print(f"{r['op']:>13} arrays on {r['arrays']:>4} bs={r['batch']:>3}: {r['us']:7.1f} us{bar}")
    if args.profile:
        for where in arrays_on:
            _profile_decode_plan(flashinfer, args.device, where, args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
