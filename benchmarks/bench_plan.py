"""Host cost of plan(): the per-step work a serving loop pays once per batch.

Bar (DESIGN.md): < 100 us at batch 256. Prints the median over repeated plans of a decode
batch and a prefill batch with uneven lengths (page 16, 32/8 heads, d128), on the device
given (cpu or cuda; the schedule is built on the host either way). With --device cuda the
index arrays are given on the host (as serving loops build them) and on the GPU, in turn, and
upstream FlashInfer's plan() (when installed) is timed beside ours on the same arrays, one
after the other per row: a serving host's speed drifts between processes and over minutes,
so the ratio in the same row is the figure to compare."""
import argparse
import json
import statistics
import time

import torch

from bench_report import attempt, import_ours, optional_import


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


def _us(value):
    return "n/a" if value is None else f"{value:7.1f} us"


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
    libs = {"ours": flashinfer}
    if args.device != "cpu":
        upstream = optional_import("flashinfer", "upstream flashinfer")
        if upstream is not None:
            libs["upstream"] = upstream
    results = []
    arrays_on = ["cpu", args.device] if args.device != "cpu" else ["cpu"]
    for where in arrays_on:
        for bs in (1, 16, 64, 256):
            indptr, indices, last = (t.to(where) for t in _batch(bs, 16))
            qo = (torch.arange(bs + 1, dtype=torch.int32) * 8).to(where)
            for op in ("decode_plan", "prefill_plan"):
                row = {"op": op, "arrays": where, "batch": bs}
                for name, lib in libs.items():
                    ws = torch.empty(128 << 20, dtype=torch.uint8, device=args.device)
                    if op == "decode_plan":
                        w = lib.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
                        fn = lambda: w.plan(indptr, indices, last, 32, 8, 128, 16)  # noqa: E731
                    else:
                        w = lib.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
                        fn = lambda: w.plan(qo, indptr, indices, last, 32, 8, 128, 16, causal=True)  # noqa: E731
                    row[f"{name}_us"] = attempt(f"{name} {op}", lambda: _median_us(fn, args.repeat))
                results.append(row)
    for r in results:
        bar = " (bar: < 100 us)" if r["batch"] == 256 else ""
        line = f"{r['op']:>13} arrays on {r['arrays']:>4} bs={r['batch']:>3}: ours {_us(r.get('ours_us'))}"
        if "upstream" in libs:
            up = r.get("upstream_us")
            ratio = f"{r['ours_us'] / up:.2f}" if up and r.get("ours_us") else "n/a"
            line += f", upstream {_us(up)}, ours / upstream {ratio}"
        print(line + bar)
    if args.profile:
        for where in arrays_on:
            _profile_decode_plan(flashinfer, args.device, where, args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
