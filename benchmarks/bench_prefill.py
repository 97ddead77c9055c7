"""Prefill on the GPU: torch_flashinfer_ops (fa2) against torch SDPA (flash, cuDNN), upstream
FlashInfer's fa2 backend and the device's GEMM ceiling.

    python benchmarks/bench_prefill.py --out DIR [--quick] [--lengths 1024,4096,16384]
        [--dims 128,64,256] [--batches 16x1024,4x4096] [--batch-dims 128,256] [--uneven prefix,mixed]
        [--calls 10] [--timing events|graph]

Single request: 32 query / 8 kv heads, qo_len = kv_len = L, NHD; head_dim 128 in fp16 and bf16,
head_dim 64 and 256 in fp16 only; causal and not. Peers: SDPA with the FLASH_ATTENTION and
CUDNN_ATTENTION backends (kv heads repeated to 32), flashinfer.single_prefill_with_kv_cache
(backend="fa2").
Batch: n requests of L tokens each (qo_len = kv_len), at each of --batch-dims (head_dims 128 and
256 by default; --batches '' runs none), fp16 and bf16, causal and not: our
BatchPrefillWithPagedKVCacheWrapper (page 16, NHD) and BatchPrefillWithRaggedKVCacheWrapper
against upstream's wrappers of the same names (backend="fa2"), 128 MiB workspace each; plan()
untimed, run() timed. "batch / single" is our batch TFLOP/s over our single-prefill TFLOP/s on
one of the row's requests (its first L tokens of q, k and v), that single call's samples taken
in turn with the row's: both under the same GPU state (clocks under the power limit, which the
rows before leave in place). "batch / single row" takes the single-prefill section's row of the
same dtype, head_dim, causality and L instead (where that row was run: L in --lengths, the
head_dim in --dims, and fp16 at head dims other than 128), timed minutes earlier.

Uneven batches (--uneven, names from UNEVEN_SHAPES): the same wrappers on batches whose
requests differ, causal, fp16: "prefix" (16 new tokens on a 32k cached prefix beside a 4k
prompt: one long unit among many short ones) and "mixed" (eight prompts of 128..4k tokens, as a
serving step collects them). Their FLOPs count the (query, key) pairs the causal mask keeps.

FLOPs = 4 * sum(qo_len * kv_len) * head_dim * num_qo_heads, halved for causal. Every library
is timed the same way (median of 30 samples at L <= 4k, 10 above, after warm-up, on random
inputs): with `--timing events` (the default) `--calls` eager back-to-back calls between one pair
of CUDA events, divided, so a call's host and launch cost shows where it rivals the kernel (1k
tokens); with `--timing graph` `--calls` calls captured in one CUDA graph, the replay timed and
divided: the kernels' time alone, as a captured model step runs them. A row's libraries are
prepared first and their samples taken in turn, so that the state a heavier row before leaves on
the GPU (clocks, power) weighs on all of them alike; a library whose output then agrees with no
other's is reported and shown as n/a (bench_report.disagreeing_outputs). "ours 1-call" times one
eager call per sample (host overhead included) under either. The GEMM ceiling is torch.matmul
of two 8192 x 8192 matrices of the row's dtype, measured at startup. Writes DIR/prefill.json
(every row and the run's metadata), prefill.md (the printed tables) and prefill.png.
"""
import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bench_report import (attempt, benchmark_parser, dtype_name, fmt, gpu_libraries, header_lines, import_ours,
                          interleaved_seconds, markdown_table, parse_with_shape_defaults, ratio, run_metadata,
                          save_bar_plot, write_partial, write_results)
from cuda_timing import interleaved_for, timed
from device_ceilings import gemm_tflops

HQ, HKV, PAGE = 32, 8, 16
BATCH_HEAD_DIM = 128  # of the uneven batches
WORKSPACE_BYTES = 128 << 20
SINGLE_PEERS = ("sdpa-flash", "sdpa-cudnn", "flashinfer-fa2")
BATCH_PEER = "flashinfer-fa2"
SINGLE_BESIDE = "ours-single"  # our single prefill on a batch row's first request, timed in turn with the row
FULL = dict(lengths="1024,4096,16384", dims="128,64,256", batches="16x1024,4x4096", batch_dims="128,256",
            uneven="prefix,mixed")
QUICK = dict(lengths="1024", dims="128", batches="4x1024", batch_dims="128", uneven="mixed")
# name: (qo_lens, kv_lens); each request's queries are the last qo_len of its kv_len tokens.
UNEVEN_SHAPES = {
    "prefix": ([16, 4096], [32768, 4096]),
    "mixed": ([4096, 512, 2048, 128, 1024, 3072, 256, 768], [4096, 512, 2048, 128, 1024, 3072, 256, 768]),
}
SHORT_DTYPE = {"float16": "fp16", "bfloat16": "bf16"}


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "prefill", QUICK)
    parser.add_argument("--lengths", help=f"single-prefill L list (default {FULL['lengths']})")
    parser.add_argument("--dims", help=f"single-prefill head_dims; 128 in fp16 and bf16, others in fp16 only "
                                       f"(default {FULL['dims']})")
    parser.add_argument("--batches",
                        help=f"batch shapes, requests x tokens, or '' for none (default {FULL['batches']})")
    parser.add_argument("--batch-dims", help=f"head_dims of the batch rows (default {FULL['batch_dims']})")
    parser.add_argument("--uneven", help=f"uneven batches, names from {', '.join(UNEVEN_SHAPES)}, or '' for none "
                                         f"(default {FULL['uneven']})")
    parser.add_argument("--calls", type=int, default=10,
                        help="calls per CUDA-event pair or per captured graph (default %(default)s)")
    parser.add_argument("--timing", choices=("events", "graph"), default="events",
                        help="events: eager back-to-back calls per CUDA-event pair; graph: the calls captured "
                             "in one CUDA graph, replays timed (default %(default)s)")
    args = parse_with_shape_defaults(parser, QUICK, FULL, argv)
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    args.uneven = [x for x in args.uneven.split(",") if x]
    unknown = [x for x in args.uneven if x not in UNEVEN_SHAPES]
    if unknown:
        parser.error(f"--uneven: unknown shape(s) {', '.join(unknown)}; known: {', '.join(UNEVEN_SHAPES)}")
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.dims = [int(x) for x in args.dims.split(",")]
    args.batches = [tuple(int(v) for v in x.split("x")) for x in args.batches.split(",") if x]
    args.batch_dims = [int(x) for x in args.batch_dims.split(",") if x]
    import_ours()
    from torch_flashinfer_ops.capabilities import GPU_HEAD_DIMS

    unserved = [d for d in args.dims + args.batch_dims if d not in GPU_HEAD_DIMS]
    if unserved:
        parser.error(f"head_dim {unserved[0]}: the kernels serve {', '.join(map(str, sorted(GPU_HEAD_DIMS)))}")
    return args



def iters_for(L):
    return 30 if L <= 4096 else 10


def attention_flops(sum_qo_kv, head_dim, causal):
    return 4.0 * sum_qo_kv * head_dim * HQ / (2 if causal else 1)


def measure_tflops(name, make, flops, timer):
    """TFLOP/s of the call that make() builds (setup untimed), or None if it is missing or fails."""
    if make is None:
        return None
    return attempt(name, lambda: flops / timer(make()) * 1e-12)


def measure_row(makers, flops, timer, iters, label="", unchecked=()):
    """name -> TFLOP/s of each maker's call (None where it is missing or fails), timed together
    (bench_report.interleaved_seconds, `unchecked` as there). flops: the row's count, or a dict
    of name -> count where the calls differ."""
    seconds = interleaved_seconds(makers, timer, iters, label, unchecked)
    count = flops.get if isinstance(flops, dict) else (lambda name: flops)
    return {name: count(name) / s * 1e-12 if s else None for name, s in seconds.items()}


def percent(value, ceiling):
    return 100.0 * value / ceiling if value and ceiling else None


# ---- single request -----------------------------------------------------------------------

def single_configs(dims, lengths):
    for head_dim in dims:
        for dtype in (torch.float16, torch.bfloat16) if head_dim == 128 else (torch.float16,):
            for causal in (False, True):
                for L in lengths:
                    yield dtype, head_dim, causal, L


def sdpa_call(backend, q, k, v, causal):
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    kt = kt.repeat_interleave(HQ // HKV, dim=1).contiguous()
    vt = vt.repeat_interleave(HQ // HKV, dim=1).contiguous()
    qt = qt.contiguous()

    def run():  # the output as [L, heads, D], the layout the other calls return (a view)
        with torch.nn.attention.sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).squeeze(0).transpose(0, 1)

    return run


def single_prefill_call(lib, q, k, v, causal):
    return lambda: lib.single_prefill_with_kv_cache(q, k, v, causal=causal, backend="fa2")


def single_makers(tfo, fi, q, k, v, causal):
    """name -> builder of a zero-argument call (None where the library is missing)."""
    backends = torch.nn.attention.SDPBackend
    return {
        "ours": lambda: single_prefill_call(tfo, q, k, v, causal),
        "sdpa-flash": lambda: sdpa_call(backends.FLASH_ATTENTION, q, k, v, causal),
        "sdpa-cudnn": lambda: sdpa_call(backends.CUDNN_ATTENTION, q, k, v, causal),
        "flashinfer-fa2": (lambda: single_prefill_call(fi, q, k, v, causal)) if fi else None,
    }


def bench_single(tfo, fi, config, timer, gemm):
    dtype, head_dim, causal, L = config
    q = torch.randn(L, HQ, head_dim, dtype=dtype, device="cuda")
    k, v = (torch.randn(L, HKV, head_dim, dtype=dtype, device="cuda") for _ in range(2))
    flops, iters = attention_flops(L * L, head_dim, causal), iters_for(L)
    makers = single_makers(tfo, fi, q, k, v, causal)
    tflops = measure_row(makers, flops, timer, iters)
    return {
        "section": "single", "kind": "single", "dtype": dtype_name(dtype), "head_dim": head_dim,
        "causal": causal, "batch": 1, "L": L, "flops": flops, "tflops": tflops,
        "ours_vs": {name: ratio(tflops["ours"], tflops[name]) for name in SINGLE_PEERS},
        "ours_pct_gemm": percent(tflops["ours"], gemm.get(dtype_name(dtype))),
        "ours_1call_tflops": measure_tflops("ours", makers["ours"], flops, lambda fn: timed(fn, iters)),
    }


# ---- batch over a paged / ragged KV cache ---------------------------------------------------

def batch_inputs(n, L, dtype, head_dim=BATCH_HEAD_DIM):
    """n requests of L query and L kv tokens: q, ragged k/v, and a page-16 NHD cache."""
    return uneven_inputs([L] * n, [L] * n, dtype, head_dim=head_dim)


def uneven_inputs(qo_lens, kv_lens, dtype, device="cuda", head_dim=BATCH_HEAD_DIM):
    """Requests of qo_lens query and kv_lens kv tokens: q, ragged k/v, and a page-16 NHD cache
    (random page order)."""
    def indptr(lengths):
        return torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0).to(torch.int32).to(device)

    pages = [-(-kv // PAGE) for kv in kv_lens]
    heads = dict(dtype=dtype, device=device)
    return SimpleNamespace(
        dtype=dtype,
        head_dim=head_dim,
        q=torch.randn(sum(qo_lens), HQ, head_dim, **heads),
        k=torch.randn(sum(kv_lens), HKV, head_dim, **heads),
        v=torch.randn(sum(kv_lens), HKV, head_dim, **heads),
        indptr=indptr(qo_lens),
        kv_indptr=indptr(kv_lens),
        kv_cache=torch.randn(sum(pages), 2, PAGE, HKV, head_dim, **heads),
        page_indptr=indptr(pages),
        page_indices=torch.randperm(sum(pages), device=device).to(torch.int32),
        last_page_len=torch.tensor([kv - (n - 1) * PAGE for kv, n in zip(kv_lens, pages)], dtype=torch.int32,
                                   device=device),
    )


def causal_pairs(qo_lens, kv_lens):
    """(query, key) pairs a causal mask keeps, queries aligned to the end of their keys."""
    return sum(qo * (kv - qo) + qo * (qo + 1) // 2 for qo, kv in zip(qo_lens, kv_lens))


def wrapper_call(lib, kind, x, causal):
    """Plans lib's paged or ragged prefill wrapper (backend fa2) on x; returns its run()."""
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=x.q.device)
    options = dict(causal=causal, q_data_type=x.dtype, kv_data_type=x.dtype)
    if kind == "paged":
        wrapper = lib.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
        wrapper.plan(x.indptr, x.page_indptr, x.page_indices, x.last_page_len, HQ, HKV, x.head_dim, PAGE,
                     **options)
        return lambda: wrapper.run(x.q, x.kv_cache)
    wrapper = lib.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD", backend="fa2")
    wrapper.plan(x.indptr, x.kv_indptr, HQ, HKV, x.head_dim, **options)
    return lambda: wrapper.run(x.q, x.k, x.v)


def batch_configs(batches, head_dims=(BATCH_HEAD_DIM,)):
    for head_dim in head_dims:
        for n, L in batches:
            for dtype in (torch.float16, torch.bfloat16):
                for causal in (False, True):
                    yield n, L, dtype, causal, head_dim


def wrapper_row(tfo, fi, kind, x, causal, flops, timer, iters, gemm, label, single=None):
    """Our and upstream's `kind` batch wrappers on x, timed: the row fields every batch section
    has, and the maker of our call (for further timings). single: (maker, flops) of a call timed
    in turn with the wrappers (its TFLOP/s in the row's "single_tflops"; its output, another
    shape, is not compared with theirs)."""
    makers = {"ours": lambda: wrapper_call(tfo, kind, x, causal),
              BATCH_PEER: (lambda: wrapper_call(fi, kind, x, causal)) if fi else None}
    counts = dict.fromkeys(makers, flops)
    if single is not None:
        makers[SINGLE_BESIDE], counts[SINGLE_BESIDE] = single
    tflops = measure_row(makers, counts, timer, iters, f" {label}", unchecked=(SINGLE_BESIDE,))
    single_tflops = tflops.pop(SINGLE_BESIDE, None)
    row = {"kind": kind, "dtype": dtype_name(x.dtype), "head_dim": x.head_dim, "causal": causal, "flops": flops,
           "tflops": tflops, "ours_vs": {BATCH_PEER: ratio(tflops["ours"], tflops[BATCH_PEER])},
           "ours_pct_gemm": percent(tflops["ours"], gemm.get(dtype_name(x.dtype)))}
    if single is not None:
        row["single_tflops"] = single_tflops
    return row, makers["ours"]


def bench_batch(tfo, fi, config, timer, gemm, single_ours):
    n, L, dtype, causal, head_dim = config
    x = batch_inputs(n, L, dtype, head_dim)
    flops, iters = attention_flops(n * L * L, head_dim, causal), iters_for(L)
    single_row = single_ours.get((dtype_name(dtype), head_dim, causal, L))
    # Our single prefill on the row's first request, timed in turn with the wrappers.
    beside = (lambda: single_prefill_call(tfo, x.q[:L], x.k[:L], x.v[:L], causal),
              attention_flops(L * L, head_dim, causal))
    rows = []
    for kind in ("paged", "ragged"):
        row, make_ours = wrapper_row(tfo, fi, kind, x, causal, flops, timer, iters, gemm, kind, single=beside)
        rows.append(dict(row, section="batch", batch=n, L=L,
                         batch_vs_single=ratio(row["tflops"]["ours"], row["single_tflops"]),
                         batch_vs_single_row=ratio(row["tflops"]["ours"], single_row),
                         ours_1call_tflops=measure_tflops(f"ours {kind}", make_ours, flops,
                                                          lambda fn: timed(fn, iters))))
    return rows


def bench_uneven(tfo, fi, name, timer, gemm):
    qo_lens, kv_lens = UNEVEN_SHAPES[name]
    x = uneven_inputs(qo_lens, kv_lens, torch.float16)
    flops = attention_flops(causal_pairs(qo_lens, kv_lens), BATCH_HEAD_DIM, False)
    iters = iters_for(max(kv_lens))
    rows = []
    for kind in ("paged", "ragged"):
        row, _ = wrapper_row(tfo, fi, kind, x, True, flops, timer, iters, gemm, f"{kind} {name}")
        rows.append(dict(row, section="uneven", shape=name, qo_lens=qo_lens, kv_lens=kv_lens))
    return rows


# ---- report ---------------------------------------------------------------------------------

def single_table(rows):
    headers = (["dtype", "d", "causal", "L", "ours TFLOP/s", "ours % GEMM"] + [f"{p} TFLOP/s" for p in SINGLE_PEERS]
               + [f"ours / {p}" for p in SINGLE_PEERS] + ["ours 1-call TFLOP/s"])
    body = [[r["dtype"], r["head_dim"], r["causal"], r["L"], fmt(r["tflops"]["ours"]),
             fmt(r["ours_pct_gemm"], ".0f", "%")] + [fmt(r["tflops"][p]) for p in SINGLE_PEERS]
            + [fmt(r["ours_vs"][p], ".2f") for p in SINGLE_PEERS] + [fmt(r["ours_1call_tflops"])] for r in rows]
    return markdown_table(headers, body)


def batch_table(rows):
    headers = ["dtype", "d", "causal", "requests x L", "kv", "ours TFLOP/s", "ours % GEMM", f"{BATCH_PEER} TFLOP/s",
               f"ours / {BATCH_PEER}", "ours single TFLOP/s", "ours batch / single", "ours batch / single row",
               "ours 1-call TFLOP/s"]
    body = [[r["dtype"], r["head_dim"], r["causal"], f"{r['batch']} x {r['L']}", r["kind"], fmt(r["tflops"]["ours"]),
             fmt(r["ours_pct_gemm"], ".0f", "%"), fmt(r["tflops"][BATCH_PEER]), fmt(r["ours_vs"][BATCH_PEER], ".2f"),
             fmt(r.get("single_tflops")), fmt(r["batch_vs_single"], ".2f"), fmt(r.get("batch_vs_single_row"), ".2f"),
             fmt(r["ours_1call_tflops"])] for r in rows]
    return markdown_table(headers, body)


def uneven_table(rows):
    headers = ["shape", "qo lengths", "kv lengths", "kv", "ours TFLOP/s", "ours % GEMM", f"{BATCH_PEER} TFLOP/s",
               f"ours / {BATCH_PEER}"]
    body = [[r["shape"], "/".join(map(str, r["qo_lens"])), "/".join(map(str, r["kv_lens"])), r["kind"],
             fmt(r["tflops"]["ours"]), fmt(r["ours_pct_gemm"], ".0f", "%"), fmt(r["tflops"][BATCH_PEER]),
             fmt(r["ours_vs"][BATCH_PEER], ".2f")] for r in rows]
    return markdown_table(headers, body)


def plot_panel(title, rows, names):
    def label(r):
        if r["section"] == "uneven":
            return f"{r['kind']} {r['shape']} causal"
        prefix = f"{r['kind']} d{r['head_dim']} {r['batch']}x" if r["section"] == "batch" else f"d{r['head_dim']} "
        return f"{SHORT_DTYPE[r['dtype']]} {prefix}{r['L']} {'causal' if r['causal'] else 'full'}"

    return {"title": title, "ylabel": "TFLOP/s", "labels": [label(r) for r in rows],
            "series": {name: [r["tflops"].get(name) for r in rows] for name in names}}


def progress(row):
    cells = ", ".join(f"{name} {fmt(value)}" for name, value in row["tflops"].items())
    shape = row["shape"] if row["section"] == "uneven" else f"{row['batch']}x{row['L']}"
    print(f"{row['kind']} {row['dtype']} d{row['head_dim']} causal={row['causal']} {shape}: {cells} TFLOP/s",
          flush=True)


def main(argv=None):
    args = parse_args(argv)
    tfo, fi = gpu_libraries("bench_prefill.py")
    gemm = {dtype_name(d): attempt(f"GEMM {dtype_name(d)}", lambda d=d: gemm_tflops(d))
            for d in (torch.float16, torch.bfloat16)}
    prepare, seconds_of, timing = interleaved_for(args.timing, args.calls)
    timer = (prepare, seconds_of)
    timing += ", for every library; median of 30 samples (L <= 4k) or 10 (L > 4k)"
    meta = run_metadata(flashinfer=getattr(fi, "__version__", None), gemm_tflops=gemm, timing=timing,
                        heads=f"{HQ}/{HKV}", page_size=PAGE, quick=args.quick)
    # The first configuration once more, discarded: timed first, right after the GEMM ceiling,
    # our first row once ran at 76.7 us per call against 59.5 us when the same shape was timed
    # on its own (H200, 1k non-causal); a discarded pass keeps such start-up transients out.
    for config in list(single_configs(args.dims, args.lengths))[:1]:
        bench_single(tfo, fi, config, timer, gemm)
    singles = []
    for config in single_configs(args.dims, args.lengths):
        singles.append(bench_single(tfo, fi, config, timer, gemm))
        progress(singles[-1])
        write_partial(args.out, "prefill", meta, singles)
    single_ours = {(r["dtype"], r["head_dim"], r["causal"], r["L"]): r["tflops"]["ours"] for r in singles}
    batches = []
    for config in batch_configs(args.batches, args.batch_dims):
        batches += bench_batch(tfo, fi, config, timer, gemm, single_ours)
        for row in batches[-2:]:
            progress(row)
        write_partial(args.out, "prefill", meta, singles + batches)
    unevens = []
    for name in args.uneven:
        unevens += bench_uneven(tfo, fi, name, timer, gemm)
        for row in unevens[-2:]:
            progress(row)
        write_partial(args.out, "prefill", meta, singles + batches + unevens)
    gemm_note = ", ".join(f"{k} {fmt(v)}" for k, v in gemm.items())
    notes = [timing, f"GEMM ceiling (torch.matmul, 8192 x 8192 x 8192) TFLOP/s: {gemm_note}",
             f"{HQ} query / {HKV} kv heads, NHD; batch: page {PAGE}, head_dim "
             f"{', '.join(map(str, args.batch_dims))} (uneven batches {BATCH_HEAD_DIM}), 128 MiB workspace "
             "per wrapper; both libraries' batch wrappers run with their default enable_pdl"]
    text = "\n".join(header_lines(meta, *notes) + [
        "", "## Single prefill", "", single_table(singles),
        "", "## Batch prefill (qo_len = kv_len = L per request)", "", batch_table(batches)]
        + (["", "## Uneven batches (causal, fp16)", "", uneven_table(unevens)] if unevens else []))
    print(text)
    write_results(args.out, "prefill", meta, singles + batches + unevens, text)
    panels = [plot_panel("Single prefill", singles, ("ours",) + SINGLE_PEERS)]
    if batches:
        panels.append(plot_panel("Batch prefill", batches, ("ours", BATCH_PEER)))
    if unevens:
        panels.append(plot_panel("Uneven batches", unevens, ("ours", BATCH_PEER)))
    save_bar_plot(os.path.join(args.out, "prefill.png"), panels)


if __name__ == "__main__":
    main()
