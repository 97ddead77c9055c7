"""Batch decode over a paged KV cache on the GPU: torch_flashinfer_ops (fa2, both kernel paths)
against upstream FlashInfer (both paths) and the device's copy bandwidth.

    python benchmarks/bench_decode.py --out DIR [--quick] [--batches 1,16,64,128,256]
        [--kv 1024,2048,4096,16384] [--kv-dtypes float16,float8_e4m3fn] [--timing graph|events]
        [--uneven uniform,lognormal] [--uneven-batches 128,256,512] [--q-dtype float16|bfloat16]
        [--graph-calls 1] [--cold-caches] [--ours-pdl default|off] [--ours-kv-chunk N]
        [--ours-task-blocks N] [--layout NHD|HND]

Shapes: page size 16, 32 query / 8 kv heads, head_dim 128, q fp16 (--q-dtype: or bf16, as
models served in bf16 give with an FP8 cache; a 16-bit cache then takes q's dtype), KV fp16 or FP8 e4m3 (FP8
runs pass k_scale = v_scale = 1.0 to run()), every request kv_len long, pages in random order.
Both libraries run with their default enable_pdl (programmatic dependent launch on sm_90+;
--ours-pdl off: ours without). --ours-kv-chunk N plans ours with kv chunks of N rows (0:
unsplit) in place of its split policy, to time the policy's choice against another in one build;
--ours-task-blocks N launches ours with N blocks in place of the plan's launch size (N <= the
multiprocessors: the tensor-core kernel's wide shape), to time the plan's deal against another.
--layout: the caches' kv layout for both libraries (NHD, FlashInfer's default, as the bars
are read: a page's rows of one kv head lie a token's row of every head apart; or HND: a page's rows
of one kv head are contiguous). Shapes whose cache exceeds --max-cache-gb (default 40) are skipped. Paths, for both libraries:
simt = use_tensor_cores=False, mma = use_tensor_cores=True (backend "fa2").
Bytes: K + V pages read + q read + out written. The ceiling is a 2 GiB device-to-device copy
(bytes read + written per second), measured at startup. Every path is timed the same way:
by default the median of CUDA-event-timed replays of a CUDA graph holding one run() (how
serving loops run decode; no Python or launch overhead), after warm-up, on random inputs;
`--graph-calls N` captures N run() calls in the graph and divides (a decode step of a model runs
one per layer back to back, so a replay's own launch cost, several us, is shared as it is there;
it weighs most at batch 1); `--timing events` times 10 back-to-back run() calls per event pair
instead. By default every call reads the same cache, so a cache of a few MB is read from L2
from the second call on. `--cold-caches`: the calls rotate over distinct caches of the shape (one
page table), as a model's layers each read their own, enough of them that no call finds its
cache in L2 (distinct_caches: the others' bytes between two reads of one cache are at least twice
the L2), and a graph then holds at least that many calls; the row records both. A shape's four
paths are planned and captured first (each its own workspace, since a
plan lives in its workspace) and their samples taken in turn, so that the GPU's state after
the previous, heavier shape (clocks, power) weighs on all four alike; then their outputs are
compared, and a path whose output agrees with no other's is reported and shown as n/a
(bench_report.disagreeing_outputs: a timing of the wrong work is no timing). L2 is not flushed
between runs (without --cold-caches, caches of a few MB are read from L2). Ratios are ours GB/s
over upstream's: best of our two paths vs best of upstream's, and per path. Upstream 0.2.14 applies v_scale
after attention as a separate `out *= v_scale` kernel, which is part of its FP8 time.
Uneven batches (--uneven, names from UNEVEN_LENGTHS; '' for none): the same paths on batches
whose requests' kv lengths differ (drawn with the batch size as seed, so every run and library
sees the same lengths), at each of --uneven-batches: how well a plan balances the GPU when
requests are not alike, as in serving.
Also prints plan() host time at the largest batch. Writes DIR/decode.json (every row and the
run's metadata), decode.md (the printed table) and decode.png.
"""
import itertools
import os
import time
from types import SimpleNamespace

import torch

from bench_report import (attempt, benchmark_parser, by_library, dtype_name, fmt, gpu_libraries, header_lines,
                          interleaved_seconds, markdown_table, parse_with_shape_defaults, ratio, run_metadata,
                          save_bar_plot, write_partial, write_results)
from cuda_timing import interleaved_for
from device_ceilings import copy_bandwidth

HQ, HKV, D, PAGE = 32, 8, 128, 16
Q_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
WORKSPACE_BYTES = 256 << 20
ITERS = 20
PATHS = ("ours-simt", "ours-mma", "flashinfer-simt", "flashinfer-mma")
FULL = dict(batches="1,16,64,128,256", kv="1024,2048,4096,16384", uneven="uniform,lognormal",
            uneven_batches="128,256,512")
QUICK = dict(batches="1,16", kv="1024", uneven="uniform", uneven_batches="16")
# name: how an uneven batch's kv lengths are drawn (uneven_kv_lens).
UNEVEN_LENGTHS = {
    "uniform": "uniform in 64..8192",
    "lognormal": "log-normal, median e^7 ~ 1.1k, capped at 32k (a few long requests among many short)",
}


# run() options of ours (--ours-pdl off: enable_pdl=False; by default both libraries take their
# default, programmatic dependent launch where the device has it).
OURS_RUN_KW = {}
# plan() options of ours: --ours-kv-chunk N plans every split with kv chunks of N rows (0: none)
# instead of the split policy, so that one build times the policy against other schedules.
OURS_PLAN_KW = {}
# --layout: the caches' kv layout, for both libraries (NHD: [page, token, kv head, d]; HND: [page,
# kv head, token, d]).
CACHE = {"layout": "NHD"}
# --ours-task-blocks N: ours' launches take N blocks instead of the plan's size (None: the plan's).
OURS_LAUNCH = {"task_blocks": None}


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "decode", QUICK)
    parser.add_argument("--batches", help=f"batch sizes (default {FULL['batches']})")
    parser.add_argument("--kv", help=f"kv lengths per request (default {FULL['kv']})")
    parser.add_argument("--kv-dtypes", help="KV cache dtypes (default: q's dtype and float8_e4m3fn; a 16-bit "
                                             "cache must be q's dtype)")
    parser.add_argument("--graph-calls", type=int, default=1,
                        help="run() calls captured in one CUDA graph with --timing graph (default %(default)s)")
    add_cold_cache_options(parser, 40.0, skips_larger=True)
    parser.add_argument("--ours-kv-chunk", type=int, default=None, metavar="N",
                        help="plan ours with kv chunks of N rows (0: unsplit) instead of its split policy")
    parser.add_argument("--ours-task-blocks", type=int, default=None, metavar="N",
                        help="launch ours with N blocks instead of the size its plan chose")
    parser.add_argument("--ours-pdl", choices=("default", "off"), default="default",
                        help="ours with its default enable_pdl or with enable_pdl=False (default %(default)s)")
    parser.add_argument("--layout", choices=("NHD", "HND"), default="NHD",
                        help="the caches' kv layout, for both libraries (default %(default)s)")
    parser.add_argument("--timing", choices=("graph", "events"), default="graph",
                        help="graph: replay of a CUDA graph holding --graph-calls run() calls; events: 10 back-to-back calls "
                             "per CUDA-event pair (default %(default)s)")
    parser.add_argument("--uneven", help=f"uneven batches, names from {', '.join(UNEVEN_LENGTHS)}, or '' for "
                                         f"none (default {FULL['uneven']})")
    parser.add_argument("--uneven-batches", help=f"batch sizes of the uneven batches (default {FULL['uneven_batches']})")
    parser.add_argument("--q-dtype", choices=tuple(Q_DTYPES), default="float16",
                        help="query dtype (default %(default)s)")
    args = parse_with_shape_defaults(parser, QUICK, FULL, argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.kv = [int(x) for x in args.kv.split(",")]
    args.q_dtype = Q_DTYPES[args.q_dtype]
    names = (args.kv_dtypes or f"{dtype_name(args.q_dtype)},float8_e4m3fn").split(",")
    mixed = [n for n in names if n in Q_DTYPES and Q_DTYPES[n] != args.q_dtype]
    if mixed:  # both libraries refuse a 16-bit cache of another dtype than q
        parser.error(f"--kv-dtypes: a 16-bit cache must be q's dtype ({dtype_name(args.q_dtype)}), got {', '.join(mixed)}")
    args.kv_dtypes = [getattr(torch, n) for n in names]
    if args.graph_calls < 1:
        parser.error(f"--graph-calls must be >= 1, got {args.graph_calls}")
    if args.ours_kv_chunk is not None and args.ours_kv_chunk < 0:
        parser.error(f"--ours-kv-chunk must be >= 0, got {args.ours_kv_chunk}")
    if args.ours_task_blocks is not None and args.ours_task_blocks < 1:
        parser.error(f"--ours-task-blocks must be >= 1, got {args.ours_task_blocks}")
    args.uneven = [x for x in args.uneven.split(",") if x]
    unknown = [x for x in args.uneven if x not in UNEVEN_LENGTHS]
    if unknown:
        parser.error(f"--uneven: unknown length model(s) {', '.join(unknown)}; known: {', '.join(UNEVEN_LENGTHS)}")
    args.uneven_batches = [int(x) for x in args.uneven_batches.split(",")]
    return args



def page_bytes(kv_dtype):
    """Bytes of one page of the cache: its K and V rows of every kv head."""
    return 2 * PAGE * HKV * D * kv_dtype.itemsize


def cache_bytes(bs, kv_len, kv_dtype):
    return bs * -(-kv_len // PAGE) * page_bytes(kv_dtype)


def random_cache(num_pages, kv_dtype, chunk_pages=8192):
    """[num_pages, 2, PAGE, HKV, D] (CACHE's layout NHD; HND: [num_pages, 2, HKV, PAGE, D]) of normal
    values, filled in chunks (no full-size fp32/fp16 temporary)."""
    page = (PAGE, HKV) if CACHE["layout"] == "NHD" else (HKV, PAGE)
    cache = torch.empty(num_pages, 2, *page, D, dtype=kv_dtype, device="cuda")
    for chunk in cache.split(chunk_pages):
        chunk.copy_(torch.randn(chunk.shape, dtype=torch.float16, device="cuda"))
    return cache


def distinct_caches(cache_nbytes, l2_bytes, budget_bytes):
    """How many distinct caches of cache_nbytes the calls rotate over so that none finds its cache
    in L2: between two reads of one cache the others move at least twice the L2's bytes through it
    (one cache alone where it is that large itself), as far as budget_bytes of caches allow."""
    if cache_nbytes >= 2 * l2_bytes:
        return 1
    need = 1 + -(-2 * l2_bytes // cache_nbytes)
    return max(1, min(need, budget_bytes // cache_nbytes))


def uneven_kv_lens(name, bs):
    """The kv lengths (int64, host) of uneven batch `name` at batch size bs, seeded by bs."""
    gen = torch.Generator().manual_seed(bs)
    if name == "uniform":
        return torch.randint(64, 8193, (bs,), generator=gen)
    if name == "lognormal":
        normal = torch.randn(bs, generator=gen, dtype=torch.float64)
        return (normal.add(7.0).exp().long() + 1).clamp(max=32768)
    raise ValueError(f"unknown uneven length model {name!r}")


def paged_layout(kv_lens):
    """kv_indptr (pages per request, cumulated) and kv_last_page_len for kv_lens, int32 on the host."""
    pages = (kv_lens + PAGE - 1) // PAGE
    indptr = torch.zeros(len(kv_lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(pages, 0)
    return indptr, ((kv_lens - 1) % PAGE + 1).to(torch.int32)


def paged_inputs(kv_lens, kv_dtype, q_dtype=torch.float16, caches=1):
    """A random paged cache holding requests of kv_lens tokens, pages in random order, and their
    queries; `caches` > 1: that many distinct caches under the one page table (x.caches, the
    first of them x.cache), as a model's layers have."""
    indptr, last = paged_layout(kv_lens)
    num_pages = int(indptr[-1])
    layers = [random_cache(num_pages, kv_dtype) for _ in range(caches)]
    return SimpleNamespace(
        kv_dtype=kv_dtype,
        cache=layers[0],
        caches=layers,
        indices=torch.randperm(num_pages, device="cuda").to(torch.int32),
        indptr=indptr.cuda(),
        last=last.cuda(),
        q=torch.randn(len(kv_lens), HQ, D, dtype=q_dtype, device="cuda"),
    )


def decode_inputs(bs, kv_len, kv_dtype, q_dtype=torch.float16, caches=1):
    return paged_inputs(torch.full((bs,), kv_len, dtype=torch.int64), kv_dtype, q_dtype, caches)


def decode_call(lib, use_tensor_cores, x, workspace, plan_kw=None, task_blocks=None, **run_kw):
    """Plans lib's BatchDecodeWithPagedKVCacheWrapper on x; returns its run() into a fixed out.
    plan_kw (ours only): options of the workspace's schedule (kv_chunk_size), which the public
    plan() leaves to the split policy. task_blocks (ours only): the launch's blocks in place of
    the plan's choice (any size runs any plan). Where x has several caches (x.caches), each call
    reads the next of them in turn, into the one out.

    q_data_type and kv_data_type are both given, not data_type=: FlashInfer 0.2.14's data_type
    fills only the dtypes left unset (q_data_type defaults to float16, so it sets the KV dtype),
    while torch_flashinfer_ops' data_type overrides both and would plan an FP8 query."""
    wrapper = lib.BatchDecodeWithPagedKVCacheWrapper(workspace, CACHE["layout"], use_tensor_cores=use_tensor_cores,
                                                     backend="fa2")
    if plan_kw:
        schedule = wrapper._workspace.plan
        wrapper._workspace.plan = lambda *a, **kw: schedule(*a, **{**kw, **plan_kw})
    wrapper.plan(x.indptr, x.indices, x.last, HQ, HKV, D, PAGE, q_data_type=x.q.dtype, kv_data_type=x.kv_dtype)
    if task_blocks is not None:
        wrapper._plan.task_blocks = task_blocks
    out = torch.empty_like(x.q)
    scales = dict(k_scale=1.0, v_scale=1.0) if x.kv_dtype.itemsize == 1 else {}
    caches = getattr(x, "caches", None) or [x.cache]
    turn = itertools.count()

    def run():
        return wrapper.run(x.q, caches[next(turn) % len(caches)], out=out, **scales, **run_kw)
    return run


def bench_shape(libs, workspaces, bs, kv_len, kv_dtype, q_dtype, timing, ceiling):
    """timing(cache bytes) -> (timer, distinct caches, calls a sample): RowTiming's."""
    timer, caches, calls = timing(cache_bytes(bs, kv_len, kv_dtype))
    x = decode_inputs(bs, kv_len, kv_dtype, q_dtype, caches)
    return dict(bench_inputs(libs, workspaces, x, timer, ceiling), section="equal", batch=bs, kv_len=kv_len,
                caches=caches, calls=calls)


def bench_uneven(libs, workspaces, name, bs, kv_dtype, q_dtype, timing, ceiling):
    kv_lens = uneven_kv_lens(name, bs)
    timer, caches, calls = timing(int(paged_layout(kv_lens)[0][-1]) * page_bytes(kv_dtype))
    row = bench_inputs(libs, workspaces, paged_inputs(kv_lens, kv_dtype, q_dtype, caches), timer, ceiling)
    lens = sorted(kv_lens.tolist())
    return dict(row, section="uneven", lengths=name, batch=bs, kv_lens=lens, caches=caches, calls=calls,
                kv_len=f"{name} {lens[0]}..{lens[-1]} (median {lens[len(lens) // 2]})")


class RowTiming:
    """A row's timer for its cache's size: the calls of a sample (--graph-calls, or 10
    back-to-back) over one cache, or with --cold-caches over distinct_caches of them, a sample
    then holding at least one call per cache."""

    def __init__(self, method, calls, cold, l2_bytes, budget_bytes):
        self.method, self.calls, self.cold = method, calls, cold
        self.l2_bytes, self.budget_bytes = l2_bytes, budget_bytes
        self.timers = {}

    def __call__(self, cache_nbytes):
        caches = distinct_caches(cache_nbytes, self.l2_bytes, self.budget_bytes) if self.cold else 1
        calls = max(self.calls, caches)
        if calls not in self.timers:
            self.timers[calls] = interleaved_for(self.method, calls)[:2]
        return self.timers[calls], caches, calls


def add_cold_cache_options(parser, max_cache_gb, skips_larger=False):
    """--cold-caches and --max-cache-gb (default max_cache_gb), as cold_cache_timing reads them;
    skips_larger: the script also skips a shape whose one cache is over --max-cache-gb."""
    parser.add_argument("--cold-caches", action="store_true",
                        help="every path's calls rotate over distinct caches, enough that none is read from L2 (as "
                             "a model's layers read their own)")
    skips = "; a shape whose one cache is larger is skipped either way" if skips_larger else ""
    parser.add_argument("--max-cache-gb", type=float, default=max_cache_gb,
                        help=f"with --cold-caches, the most GB of distinct caches a row holds{skips} "
                             "(default %(default)s)")


def l2_cache_bytes():
    """The current GPU's L2 cache size in bytes."""
    return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size


def cold_cache_timing(args, method, calls, calls_note=""):
    """(the run's timing line, its rows' RowTiming) for interleaved_for(method, calls) and the
    options of add_cold_cache_options: with --cold-caches the line tells how the calls rotate
    over distinct caches, sized by the device's L2 (calls_note after it)."""
    timing, l2 = interleaved_for(method, calls)[2], 0
    if args.cold_caches:
        l2 = l2_cache_bytes()
        timing += (f"; cold caches: each call reads the next of distinct caches ({l2 / 1e6:.0f} MB of L2: twice "
                   f"that between two reads of one), a sample at least one call per cache{calls_note}")
    return timing, RowTiming(method, calls, args.cold_caches, l2, int(args.max_cache_gb * 1e9))


def bench_inputs(libs, workspaces, x, timer, ceiling):
    """Every path on the inputs x: the row's times, bandwidths and ratios. The paths are
    prepared first and their samples interleaved (cuda_timing.interleaved_for): timed one after
    the other, the first path after a heavy shape ran on a GPU still leaving that state."""
    kv_dtype = x.kv_dtype
    nbytes = x.cache.numel() * x.cache.element_size() + 2 * x.q.numel() * x.q.element_size()

    def maker(path):
        lib_name, kernel = path.split("-")
        lib = libs.get(lib_name)
        if lib is None:
            return None
        ours = lib_name == "ours"
        return lambda: decode_call(lib, kernel == "mma", x, workspaces[path], OURS_PLAN_KW if ours else None,
                                   OURS_LAUNCH["task_blocks"] if ours else None, **(OURS_RUN_KW if ours else {}))
    seconds = interleaved_seconds({path: maker(path) for path in PATHS}, timer, ITERS, f" {dtype_name(kv_dtype)}")
    gbps = {p: nbytes / s / 1e9 if s else None for p, s in seconds.items()}
    best = {lib: max((gbps[p] for p in PATHS if p.startswith(lib) and gbps[p]), default=None)
            for lib in ("ours", "flashinfer")}
    return {
        "kv_dtype": dtype_name(kv_dtype), "q_dtype": dtype_name(x.q.dtype), "bytes": nbytes,
        "us": {p: s * 1e6 if s else None for p, s in seconds.items()},
        "gbps": gbps,
        "pct_copy": {p: 100 * g * 1e9 / ceiling if g and ceiling else None for p, g in gbps.items()},
        "ours_vs_flashinfer": {"best": ratio(best["ours"], best["flashinfer"]),
                               "simt": ratio(gbps["ours-simt"], gbps["flashinfer-simt"]),
                               "mma": ratio(gbps["ours-mma"], gbps["flashinfer-mma"])},
    }


def plan_host_us(libs, bs, q_dtype=torch.float16, repeat=20):
    """Host microseconds of one decode plan() at batch bs (64 pages per request, host index arrays)."""
    indptr = torch.arange(bs + 1, dtype=torch.int32) * 64
    indices = torch.arange(bs * 64, dtype=torch.int32)
    last = torch.full((bs,), PAGE, dtype=torch.int32)
    result = {}
    for name, lib in libs.items():
        def run():
            workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
            wrapper = lib.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
            plan = lambda: wrapper.plan(indptr, indices, last, HQ, HKV, D, PAGE, q_data_type=q_dtype)
            for _ in range(3):
                plan()
            start = time.perf_counter()
            for _ in range(repeat):
                plan()
            return (time.perf_counter() - start) / repeat * 1e6
        result[name] = attempt(f"{name} plan()", run)
    return result


def table(rows):
    headers = (["kv dtype", "bs", "kv"] + [f"{p} us / GB/s / % copy" for p in PATHS]
               + ["ours / flashinfer (best)", "simt ours / flashinfer", "mma ours / flashinfer"])

    def cell(r, p):
        if r["us"][p] is None:
            return "n/a"
        return f"{r['us'][p]:.1f} / {r['gbps'][p]:.0f} / {fmt(r['pct_copy'][p], '.0f', '%')}"

    body = [[r["kv_dtype"], r["batch"], r["kv_len"]] + [cell(r, p) for p in PATHS]
            + [fmt(r["ours_vs_flashinfer"][k], ".2f") for k in ("best", "simt", "mma")] for r in rows]
    if any(r.get("caches", 1) > 1 for r in rows):  # --cold-caches: the distinct caches and a sample's calls
        headers.insert(3, "caches / calls")
        for r, line in zip(rows, body):
            line.insert(3, f"{r.get('caches', 1)} / {r.get('calls', '')}")
    return markdown_table(headers, body)


def plot_panels(rows, kv_dtypes, ceiling):
    panels = []
    for kv_dtype in map(dtype_name, kv_dtypes):
        sel = [r for r in rows if r["kv_dtype"] == kv_dtype]
        panels.append({"title": f"Batch decode, KV {kv_dtype}", "ylabel": "GB/s",
                       "labels": [f"bs{r['batch']} " + (r["lengths"] if r["section"] == "uneven" else f"kv{r['kv_len']}")
                                  for r in sel],
                       "series": {p: [r["gbps"][p] for r in sel] for p in PATHS},
                       "hlines": {"copy ceiling": ceiling / 1e9} if ceiling else {}})
    return panels


def progress(row):
    print(f"{row['kv_dtype']} bs {row['batch']} kv {row['kv_len']}: "
          + ", ".join(f"{p} {fmt(row['gbps'][p], '.0f')}" for p in PATHS) + " GB/s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    tfo, fi = gpu_libraries("bench_decode.py")
    libs = by_library(tfo, fi)
    if args.ours_pdl == "off":
        OURS_RUN_KW["enable_pdl"] = False
    if args.ours_kv_chunk is not None:
        OURS_PLAN_KW["kv_chunk_size"] = args.ours_kv_chunk
    OURS_LAUNCH["task_blocks"] = args.ours_task_blocks
    CACHE["layout"] = args.layout
    calls = args.graph_calls if args.timing == "graph" else 10
    timing, row_timing = cold_cache_timing(args, args.timing, calls, calls_note=" (the rows' calls)")
    ceiling = attempt("copy ceiling", copy_bandwidth)
    workspaces = {path: torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
                  for path in PATHS if path.split("-")[0] in libs}
    meta = run_metadata(flashinfer=getattr(fi, "__version__", None), copy_ceiling_gbps=ceiling and ceiling / 1e9,
                        timing=timing, cold_caches=args.cold_caches, iters=ITERS, shape=f"page {PAGE}, {HQ}/{HKV} heads, d{D}, q {dtype_name(args.q_dtype)}, {args.layout}",
                        quick=args.quick)
    rows = []
    for kv_dtype in args.kv_dtypes:
        for kv_len in args.kv:
            for bs in args.batches:
                if cache_bytes(bs, kv_len, kv_dtype) > args.max_cache_gb * 1e9:
                    print(f"skip bs {bs} kv {kv_len} {dtype_name(kv_dtype)}: cache over {args.max_cache_gb} GB")
                    continue
                rows.append(bench_shape(libs, workspaces, bs, kv_len, kv_dtype, args.q_dtype, row_timing, ceiling))
                torch.cuda.empty_cache()
                progress(rows[-1])
                write_partial(args.out, "decode", meta, rows)
        for name in args.uneven:
            for bs in args.uneven_batches:
                rows.append(bench_uneven(libs, workspaces, name, bs, kv_dtype, args.q_dtype, row_timing, ceiling))
                torch.cuda.empty_cache()
                progress(rows[-1])
                write_partial(args.out, "decode", meta, rows)
    plan_bs = max(args.batches)
    meta["plan_host_us"] = {"batch": plan_bs, **plan_host_us(libs, plan_bs, args.q_dtype)}
    plan_note = ", ".join(f"{k} {fmt(v, '.0f')} us" for k, v in meta["plan_host_us"].items() if k != "batch")
    launch = "the plan's size" if args.ours_task_blocks is None else f"{args.ours_task_blocks} blocks"
    notes = [f"{timing}; median of {ITERS}",
             f"page {PAGE}, {HQ}/{HKV} heads, d{D}, q {dtype_name(args.q_dtype)}, {args.layout}; simt = use_tensor_cores=False, mma = "
             "use_tensor_cores=True; FP8 runs pass k_scale = v_scale = 1.0 (upstream applies v_scale as a "
             "separate out *= v_scale kernel); enable_pdl: upstream its default, ours "
             f"{'False' if OURS_RUN_KW.get('enable_pdl') is False else 'its default'}; ours' kv chunk: "
             f"{'the split policy' if args.ours_kv_chunk is None else args.ours_kv_chunk}; ours' launch: {launch}",
             f"copy ceiling {fmt(meta['copy_ceiling_gbps'], '.0f')} GB/s (2 GiB device-to-device, read + write)",
             f"plan() host time at bs {plan_bs}: {plan_note}"]
    text = "\n".join(header_lines(meta, *notes) + ["", table(rows)])
    print(text)
    write_results(args.out, "decode", meta, rows, text)
    save_bar_plot(os.path.join(args.out, "decode.png"), plot_panels(rows, args.kv_dtypes, ceiling))


if __name__ == "__main__":
    main()
