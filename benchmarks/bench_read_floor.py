"""Batch decode against the least any kernel spends reading the same KV cache: how much of a
decode call's time is the bytes and the launch, and how much is the decode's own work.

    python benchmarks/bench_read_floor.py --out DIR [--batches 1] [--kv 1024,2048,4096,16384]
        [--kv-dtypes float16,float8_e4m3fn] [--graph-calls 10] [--cold-caches]

Per shape (bench_decode.py's: page 16, 32/8 heads, d128, q fp16, pages in random order), timed
in turn in one process the way bench_decode.py times (CUDA graphs of --graph-calls calls):
  - our decode and upstream FlashInfer's (both kernel paths each, where upstream is installed);
  - stream_read.py's kernel reading the row's whole cache once (exactly the pages the batch
    holds), launched like our decode (programmatic dependent launch on sm_90+), at several grid
    sizes; "read floor" is the fastest of them;
  - the same kernel reading nothing: a launch's own cost in the graph.
The bytes of a small cache stay in L2 from one call to the next for every path alike (a graph
of ten calls reads the same pages ten times), as in bench_decode.py; with --cold-caches every
path's calls rotate over distinct caches of the shape, as bench_decode.py's do, so that none is
read from L2 (the read kernel's too: the floor of a cold read).
Prints, per row: the floor (and its share of the 2 GiB copy ceiling, as bench_decode.py's
95%-of-copy bar reads it), our best, upstream's best, ours / upstream, and the time that 1.5x
upstream asks of ours, against the floor. Writes DIR/read_floor.json and read_floor.md.
"""

import torch

import itertools

from bench_decode import (ITERS, PATHS, WORKSPACE_BYTES, add_cold_cache_options, cache_bytes, cold_cache_timing,
                          decode_call, decode_inputs)
from bench_report import (attempt, benchmark_parser, by_library, dtype_name, fmt, gpu_libraries, header_lines,
                          interleaved_seconds, markdown_table, parse_with_shape_defaults, run_metadata, write_results)
from device_ceilings import copy_bandwidth
from stream_read import read_call, stream_reader

FULL = dict(batches="1", kv="1024,2048,4096,16384")
QUICK = dict(batches="1", kv="1024")
THREADS = (256, 512, 1024)
BLOCKS_PER_SM = (1, 2, 4)


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "read_floor", QUICK)
    parser.add_argument("--batches", help=f"batch sizes (default {FULL['batches']})")
    parser.add_argument("--kv", help=f"kv lengths per request (default {FULL['kv']})")
    parser.add_argument("--kv-dtypes", default="float16,float8_e4m3fn", help="KV cache dtypes (default %(default)s)")
    parser.add_argument("--graph-calls", type=int, default=10, help="calls per CUDA graph (default %(default)s)")
    add_cold_cache_options(parser, 8.0)
    args = parse_with_shape_defaults(parser, QUICK, FULL, argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.kv = [int(x) for x in args.kv.split(",")]
    args.kv_dtypes = [getattr(torch, n) for n in args.kv_dtypes.split(",")]
    if args.graph_calls < 1:
        parser.error(f"--graph-calls must be >= 1, got {args.graph_calls}")
    return args


def rotating_read(reader, buffers, blocks, threads):
    """read_call over each of buffers in turn, a call each."""
    calls = [read_call(reader, b, blocks, threads) for b in buffers]
    turn = itertools.count()
    return lambda: calls[next(turn) % len(calls)]()


def bench_row(libs, workspaces, reader, sms, bs, kv_len, kv_dtype, timing, ceiling):
    """timing(cache bytes) -> (timer, distinct caches, calls a sample): bench_decode.RowTiming's."""
    timer, caches, calls = timing(cache_bytes(bs, kv_len, kv_dtype))
    x = decode_inputs(bs, kv_len, kv_dtype, caches=caches)
    buffers = getattr(x, "caches", None) or [x.cache]
    makers = {}
    for path in PATHS:
        lib_name, kernel = path.split("-")
        if lib_name in libs:
            makers[path] = (lambda lib=libs[lib_name], mma=kernel == "mma", workspace=workspaces[path]:
                            decode_call(lib, mma, x, workspace))
    reads = {f"read {k * sms}x{t}": (k * sms, t) for k in BLOCKS_PER_SM for t in THREADS}
    for name, (blocks, threads) in reads.items():
        makers[name] = lambda blocks=blocks, threads=threads: rotating_read(reader, buffers, blocks, threads)
    makers["launch"] = lambda: read_call(reader, x.cache, 0, 32)
    unchecked = (*reads, "launch")
    us = {k: (s * 1e6 if s else None)
          for k, s in interleaved_seconds(makers, timer, ITERS, f" {dtype_name(kv_dtype)}", unchecked).items()}
    floor_name = min((n for n in reads if us[n]), key=us.get, default=None)

    def best(lib):
        found = [(us[p], p) for p in PATHS if p.startswith(lib) and us.get(p)]
        return min(found) if found else (None, None)
    ours, ours_path = best("ours")
    upstream, upstream_path = best("flashinfer")
    nbytes = x.cache.numel() * x.cache.element_size()

    def pct_copy(t):  # the cache's bytes only (a decode also reads q and writes out: ~0.1% here)
        return 100 * nbytes / (t * 1e-6) / ceiling if t and ceiling else None
    return {
        "kv_dtype": dtype_name(kv_dtype), "batch": bs, "kv_len": kv_len, "caches": caches, "calls": calls,
        "cache_bytes": nbytes, "us": us,
        "read_floor_pct_copy": pct_copy(us.get(floor_name)), "ours_pct_copy": pct_copy(ours),
        "read_floor_us": us.get(floor_name), "read_floor_grid": floor_name, "launch_us": us["launch"],
        "ours_us": ours, "ours_path": ours_path, "flashinfer_us": upstream, "flashinfer_path": upstream_path,
        "ours_vs_flashinfer": upstream / ours if ours and upstream else None,
        "us_for_1_5x": upstream / 1.5 if upstream else None,
    }


def table(rows):
    headers = ["kv dtype", "bs", "kv", "cache MB", "caches / calls", "launch us", "read floor us (grid)", "floor % copy", "ours us (path)",
               "ours % copy", "flashinfer us (path)", "ours / flashinfer", "1.5x flashinfer asks us", "ours - floor us"]
    body = []
    for r in rows:
        body.append([r["kv_dtype"], r["batch"], r["kv_len"], fmt(r["cache_bytes"] / 1e6, ".1f"),
                     f"{r['caches']} / {r['calls']}", fmt(r["launch_us"]),
                     f"{fmt(r['read_floor_us'])} ({r['read_floor_grid']})", fmt(r["read_floor_pct_copy"], ".0f", "%"),
                     f"{fmt(r['ours_us'])} ({r['ours_path']})", fmt(r["ours_pct_copy"], ".0f", "%"),
                     f"{fmt(r['flashinfer_us'])} ({r['flashinfer_path']})", fmt(r["ours_vs_flashinfer"], ".2f"),
                     fmt(r["us_for_1_5x"]),
                     fmt(r["ours_us"] - r["read_floor_us"] if r["ours_us"] and r["read_floor_us"] else None)])
    return markdown_table(headers, body)


def main(argv=None):
    args = parse_args(argv)
    tfo, fi = gpu_libraries("bench_read_floor.py")
    libs = by_library(tfo, fi)
    print("building the stream-read kernel ...", flush=True)
    reader = stream_reader()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    timing, row_timing = cold_cache_timing(args, "graph", args.graph_calls)
    ceiling = attempt("copy ceiling", copy_bandwidth)
    workspaces = {path: torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
                  for path in PATHS if path.split("-")[0] in libs}
    meta = run_metadata(flashinfer=getattr(fi, "__version__", None), copy_ceiling_gbps=ceiling and ceiling / 1e9,
                        timing=timing, cold_caches=args.cold_caches, iters=ITERS,
                        shape="page 16, 32/8 heads, d128, q float16", quick=args.quick)
    rows = []
    for kv_dtype in args.kv_dtypes:
        for kv_len in args.kv:
            for bs in args.batches:
                row = attempt(f"{dtype_name(kv_dtype)} bs {bs} kv {kv_len}",
                              lambda: bench_row(libs, workspaces, reader, sms, bs, kv_len, kv_dtype, row_timing,
                                                ceiling))
                if row:
                    rows.append(row)
                    print(f"{row['kv_dtype']} bs {bs} kv {kv_len}: floor {fmt(row['read_floor_us'])} us, "
                          f"ours {fmt(row['ours_us'])}, flashinfer {fmt(row['flashinfer_us'])}", flush=True)
                torch.cuda.empty_cache()
    notes = [f"{timing}; median of {ITERS}",
             f"read floor: the fastest of {len(BLOCKS_PER_SM) * len(THREADS)} grids (blocks x threads) of a kernel "
             "that only loads the cache's bytes (16-byte loads, 4 in flight a thread), programmatic dependent "
             "launch as ours; launch: the same kernel, one block, no loads",
             f"copy ceiling {fmt(meta['copy_ceiling_gbps'], '.0f')} GB/s (2 GiB device-to-device, read + write); "
             "% copy counts the cache's bytes"]
    text = "\n".join(header_lines(meta, *notes) + ["", table(rows)])
    print(text)
    write_results(args.out, "read_floor", meta, rows, text)


if __name__ == "__main__":
    main()
