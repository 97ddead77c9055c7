"""Appending new K/V to a paged KV cache on the GPU: torch_flashinfer_ops.page.append_paged_kv_cache
against upstream flashinfer.page.append_paged_kv_cache and the device's copy bandwidth.

    python benchmarks/bench_append.py --out DIR [--quick] [--decode-batches 1,16,64,256]
        [--prefill 4x4096] [--timing graph|events] [--ours-pdl default|off]

Shapes: fp16, 8 kv heads, head_dim 128, page size 16, NHD cache [pages, 2, 16, 8, 128], pages in
random order. Decode-shaped: bs requests that hold 1000 tokens each get one new token.
Prefill-shaped: n empty requests get L new tokens each. batch_indices/positions come from
torch_flashinfer_ops.page.get_batch_indices_positions outside the timed region; both libraries
get the same inputs (same signature: append_key, append_value, batch_indices, positions,
paged_kv_cache, kv_indices, kv_indptr, kv_last_page_len, kv_layout="NHD").
Bytes = append_key + append_value bytes read + the same bytes written into the cache. The
ceiling is a 2 GiB device-to-device copy (bytes read + written per second), measured at startup.
Both libraries are timed the same way: by default 10 calls captured in one CUDA graph, the
replay timed by CUDA events and divided (median of 20), after warm-up; `--timing events` times
10 back-to-back calls per event pair instead. L2 is not flushed (decode-shaped appends touch a
few KB). Ours takes its default enable_pdl (programmatic dependent launch on NVIDIA sm_90+, where
each call's launch overlaps the previous kernel's tail; upstream's append has no such option);
`--ours-pdl off` passes enable_pdl=False. Writes DIR/append.json (every row and the run's metadata), append.md and append.png.
"""
import os
from types import SimpleNamespace

import torch

from bench_report import (attempt, benchmark_parser, by_library, fmt, gpu_libraries, header_lines, markdown_table,
                          parse_with_shape_defaults, ratio, run_metadata, save_bar_plot, write_results)
from cuda_timing import timer_for
from device_ceilings import copy_bandwidth

HKV, D, PAGE = 8, 128, 16
DTYPE = torch.float16
DECODE_PRIOR_TOKENS = 1000
CALLS, ITERS = 10, 20
LIBS = ("ours", "flashinfer")
FULL = dict(decode_batches="1,16,64,256", prefill="4x4096")
QUICK = dict(decode_batches="1,16", prefill="2x1024")


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "append", QUICK)
    parser.add_argument("--decode-batches", help=f"decode-shaped batch sizes (default {FULL['decode_batches']})")
    parser.add_argument("--prefill", help=f"prefill-shaped requests x new tokens (default {FULL['prefill']})")
    parser.add_argument("--timing", choices=("graph", "events"), default="graph",
                        help=f"graph: {CALLS} calls in one CUDA graph; events: {CALLS} back-to-back calls per "
                             "CUDA-event pair (default %(default)s)")
    parser.add_argument("--ours-pdl", choices=("default", "off"), default="default",
                        help="ours with its default enable_pdl, or enable_pdl=False (default %(default)s)")
    args = parse_with_shape_defaults(parser, QUICK, FULL, argv)
    decode = [("decode", int(bs), DECODE_PRIOR_TOKENS, 1) for bs in args.decode_batches.split(",")]
    prefill = [("prefill", *(int(v) for v in shape.split("x"))) for shape in args.prefill.split(",")]
    args.shapes = decode + [(kind, n, 0, new) for kind, n, new in prefill]
    return args


def append_inputs(page_ops, n, prior, new):
    """n requests holding `prior` tokens, each appending `new`: the cache, its index arrays
    (already covering the appended tokens), the new K/V and their batch indices / positions."""
    kv_len = prior + new
    pages_per = -(-kv_len // PAGE)
    num_pages = n * pages_per
    ints = dict(dtype=torch.int32, device="cuda")
    kv_indptr = torch.arange(n + 1, **ints) * pages_per
    last = torch.full((n,), kv_len - (pages_per - 1) * PAGE, **ints)
    seq_lens = page_ops.get_seq_lens(kv_indptr, last, PAGE)
    batch_indices, positions = page_ops.get_batch_indices_positions(torch.arange(n + 1, **ints) * new, seq_lens,
                                                                    n * new)
    return SimpleNamespace(
        key=torch.randn(n * new, HKV, D, dtype=DTYPE, device="cuda"),
        value=torch.randn(n * new, HKV, D, dtype=DTYPE, device="cuda"),
        batch_indices=batch_indices, positions=positions,
        cache=torch.randn(num_pages, 2, PAGE, HKV, D, dtype=DTYPE, device="cuda"),
        kv_indices=torch.randperm(num_pages, device="cuda").to(torch.int32),
        kv_indptr=kv_indptr, last=last,
    )


# Keyword arguments of ours only (--ours-pdl off: enable_pdl=False).
OURS_KW = {}


def append_call(page_ops, x, extra=None):
    return lambda: page_ops.append_paged_kv_cache(x.key, x.value, x.batch_indices, x.positions, x.cache,
                                                  x.kv_indices, x.kv_indptr, x.last, kv_layout="NHD",
                                                  **(extra or {}))


def bench_shape(libs, tfo_page, shape, timer, ceiling):
    kind, n, prior, new = shape
    x = append_inputs(tfo_page, n, prior, new)
    nbytes = 2 * (x.key.numel() * x.key.element_size() + x.value.numel() * x.value.element_size())
    seconds = {name: attempt(f"{name} append",
                             lambda: timer(append_call(libs[name].page, x, OURS_KW if name == "ours" else None), ITERS))
               if name in libs else None for name in LIBS}
    gbps = {name: nbytes / s / 1e9 if s else None for name, s in seconds.items()}
    return {
        "shape": kind, "batch": n, "prior_tokens": prior, "new_tokens_per_request": new, "bytes": nbytes,
        "us": {name: s * 1e6 if s else None for name, s in seconds.items()},
        "gbps": gbps,
        "pct_copy": {name: 100 * g * 1e9 / ceiling if g and ceiling else None for name, g in gbps.items()},
        "ours_vs_flashinfer": ratio(gbps["ours"], gbps["flashinfer"]),
    }


def table(rows):
    headers = ["shape", "requests", "tokens held", "new tokens each", "bytes"]
    for name in LIBS:
        headers += [f"{name} us", f"{name} GB/s", f"{name} % copy"]
    headers.append("ours / flashinfer")
    body = []
    for r in rows:
        line = [r["shape"], r["batch"], r["prior_tokens"], r["new_tokens_per_request"], r["bytes"]]
        for name in LIBS:
            line += [fmt(r["us"][name], ".2f"), fmt(r["gbps"][name], ".1f"), fmt(r["pct_copy"][name], ".1f", "%")]
        body.append(line + [fmt(r["ours_vs_flashinfer"], ".2f")])
    return markdown_table(headers, body)


def plot_panels(rows, ceiling):
    panels = []
    for kind in ("decode", "prefill"):
        sel = [r for r in rows if r["shape"] == kind]
        panels.append({"title": f"append_paged_kv_cache, {kind}-shaped", "ylabel": "GB/s",
                       "labels": [f"{r['batch']} x {r['new_tokens_per_request']} new" for r in sel],
                       "series": {name: [r["gbps"][name] for r in sel] for name in LIBS},
                       "hlines": {"copy ceiling": ceiling / 1e9} if ceiling and kind == "prefill" else {}})
    return panels


def main(argv=None):
    args = parse_args(argv)
    tfo, fi = gpu_libraries("bench_append.py")
    libs = by_library(tfo, fi)
    if args.ours_pdl == "off":
        OURS_KW["enable_pdl"] = False
    timer, timing = timer_for(args.timing, CALLS)
    ceiling = attempt("copy ceiling", copy_bandwidth)
    meta = run_metadata(flashinfer=getattr(fi, "__version__", None),
                        copy_ceiling_gbps=ceiling and ceiling / 1e9, timing=timing, iters=ITERS,
                        shape=f"fp16, {HKV} kv heads, d{D}, page {PAGE}, NHD", quick=args.quick,
                        ours_pdl=args.ours_pdl)
    rows = []
    for shape in args.shapes:
        rows.append(bench_shape(libs, tfo.page, shape, timer, ceiling))
        print(f"{shape[0]} {shape[1]} x {shape[3]} new: "
              + ", ".join(f"{name} {fmt(rows[-1]['us'][name], '.2f')} us" for name in LIBS), flush=True)
    notes = [f"{timing}; median of {ITERS}",
             f"fp16, {HKV} kv heads, d{D}, page {PAGE}, NHD; decode-shaped requests hold {DECODE_PRIOR_TOKENS} tokens",
             f"copy ceiling {fmt(meta['copy_ceiling_gbps'], '.0f')} GB/s (2 GiB device-to-device, read + write)",
             f"ours: enable_pdl {'default' if args.ours_pdl == 'default' else 'False'}"]
    text = "\n".join(header_lines(meta, *notes) + ["", table(rows)])
    print(text)
    write_results(args.out, "append", meta, rows, text)
    save_bar_plot(os.path.join(args.out, "append.png"), plot_panels(rows, ceiling))


if __name__ == "__main__":
    main()
