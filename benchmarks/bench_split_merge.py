"""Batch decode of split requests: the merge inside the decode launch against a second merge launch.

    python benchmarks/bench_split_merge.py --out DIR [--quick] [--shapes 1x1024,1x4096,...]

On NVIDIA, run() merges the splits of a small batch inside the decode launch (the block that
stores a request's last split combines them, counted in the workspace's split counters). The
operator takes the merge-launch path when it is given no counters; this benchmark times both
paths on the same plan, for both kernel families, so the choice in the bindings (in the launch
while the split groups fit one round of the grid) can be checked on any device. Shapes: page 16,
32/8 heads, d128, fp16, every request kv_len long. Each path: one run() captured in a CUDA graph,
median of replays timed by CUDA events. The two outputs are compared (they should be equal:
the same partial rows merged in the same order). Writes DIR/split_merge.json and .md.
"""
import sys

import torch

from bench_decode import D, HKV, HQ, PAGE, decode_inputs
from bench_report import (benchmark_parser, fmt, header_lines, import_ours, markdown_table,
                          parse_with_shape_defaults, ratio, run_metadata, write_results)
from cuda_timing import graph_timed

ITERS = 50
FULL = dict(shapes="1x1024,1x4096,1x16384,16x4096,64x4096")
QUICK = dict(shapes="1x4096")


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "split_merge", QUICK)
    parser.add_argument("--shapes", help=f"batch x kv_len list (default {FULL['shapes']})")
    args = parse_with_shape_defaults(parser, QUICK, FULL, argv)
    args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    return args


def bench_shape(tfo, bs, kv_len, use_tensor_cores):
    x = decode_inputs(bs, kv_len, torch.float16)
    workspace = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    wrapper = tfo.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=use_tensor_cores)
    wrapper.plan(x.indptr, x.indices, x.last, HQ, HKV, D, PAGE, q_data_type=torch.float16)
    plan = wrapper._plan
    out_in_launch, out_merge_launch = torch.empty_like(x.q), torch.empty_like(x.q)
    no_counters = torch.zeros(0, dtype=torch.int32, device="cuda")

    def in_launch():
        wrapper.run(x.q, x.cache, out=out_in_launch)

    def merge_launch():
        tfo._ops.ops.batch_decode_paged_run(
            x.q, x.cache[:, 0], x.cache[:, 1], wrapper._kv_indptr, wrapper._kv_indices, wrapper._kv_last_page_len,
            plan.plan_info, plan.partial_o, plan.partial_lse, no_counters, out_merge_launch, None, 0, -1,
            D ** -0.5, 0.0, 1.0, 1.0, use_tensor_cores)

    t_in, t_merge = graph_timed(in_launch, 1, ITERS), graph_timed(merge_launch, 1, ITERS)
    torch.cuda.synchronize()
    return {
        "batch": bs, "kv_len": kv_len, "path": "mma" if use_tensor_cores else "simt",
        "partial_rows": int(wrapper._workspace.plan_host[4]),
        "in_launch_us": t_in * 1e6, "merge_launch_us": t_merge * 1e6,
        "merge_launch_over_in_launch": ratio(t_merge, t_in),
        "max_abs_diff": (out_in_launch.float() - out_merge_launch.float()).abs().max().item(),
    }


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_split_merge.py needs a CUDA GPU")
    tfo = import_ours()
    meta = run_metadata(iters=ITERS, shape=f"page {PAGE}, {HQ}/{HKV} heads, d{D}, fp16", quick=args.quick)
    rows = []
    for bs, kv_len in args.shapes:
        for use_tensor_cores in (False, True):
            rows.append(bench_shape(tfo, bs, kv_len, use_tensor_cores))
            torch.cuda.empty_cache()
    headers = ["bs", "kv", "path", "partial rows", "in-launch merge us", "merge launch us",
               "merge launch / in-launch", "max |diff|"]
    table = markdown_table(headers, [
        [r["batch"], r["kv_len"], r["path"], r["partial_rows"], fmt(r["in_launch_us"]), fmt(r["merge_launch_us"]),
         fmt(r["merge_launch_over_in_launch"], ".2f"), f"{r['max_abs_diff']:.1e}"] for r in rows])
    notes = [f"one run() captured in a CUDA graph per path, median of {ITERS} replays; same plan for both paths",
             f"page {PAGE}, {HQ}/{HKV} heads, d{D}, fp16; simt = use_tensor_cores=False, mma = True"]
    text = "\n".join(header_lines(meta, *notes) + ["", table])
    print(text)
    write_results(args.out, "split_merge", meta, rows, text)


if __name__ == "__main__":
    main()
