"""Where a batch decode launch spends its time, task by task: a profiling build's per-task
timeline of the decode kernels, summarised per shape.

    TFO_TIMELINE=1 python setup.py build_ext --inplace      (a profiling build; see setup.py)
    python benchmarks/decode_timeline.py --out DIR [--batches 1,64] [--kv 1024,4096]
        [--kv-dtypes float16,float8_e4m3fn] [--paths mma,simt] [--calls 3]

Shapes as bench_decode.py's (page 16, 32/8 heads, d128, q fp16, pages in random order); paths:
mma = use_tensor_cores=True, simt = False (whose first-tile and tiles-done stamps are its first
thread's own rows and loop: that kernel has no barrier there). Each
shape is planned once and run --calls times back to back (programmatic dependent launch as
run() defaults), each call recording into a buffer of its own; the table summarises the last
call (the earlier ones warm it up and precede it, as the calls of a decode step do).

Every task's first thread stamps the device-wide clock at the task's start and end, and the
multiprocessor's cycle counter at each event (csrc/include/timeline_record.h): the start, past
the wait for the launch before (grid_dependency_wait), the first K/V tile landed, all tiles
done, the waves' outputs combined and stored, the split's arrival (and, for the last split of a
request, its merge) done. Columns:
  tasks / blocks      tasks recorded, blocks that ran them
  spread us           the blocks' first tasks' starts, last minus first (device clock)
  span us             the last task's end minus the first task's start (device clock)
  end p50 / max us    when the tasks end, from the first start
  wait, first tile, tiles, combine, finish us
                      per-task phase lengths (p50 / p90), cycles at the clock the timeline
                      measured (cycles over device-clock nanoseconds, all tasks together)
  sm blocks           multiprocessors by the blocks that ran on them ("116x4 16x3": 116 ran 4)
  sm end by blocks    when a multiprocessor's last task ends, averaged over the multiprocessors
                      that ran that many blocks ("3:42.9 4:46.1", us from the first start)
  sm end sd us        the spread of those ends over the multiprocessors of the most common count
  sm corr calls       how the same multiprocessors' ends correlate between the last two calls
                      (those of the most common count in both): near 1, the same ones are slow
                      from call to call (their place on the chip); near 0, chance
The device clock (%globaltimer) may tick in steps of up to a microsecond on some GPUs: spreads
and spans are good to that step, phase lengths (cycle counts) to a cycle. Writes DIR/timeline.json
(summaries and every raw record) and timeline.md.
"""
import os
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_report import (benchmark_parser, dtype_name, import_ours, markdown_table, run_metadata,  # noqa: E402
                          write_results)

# csrc/include/timeline_record.h: words of a record, and the decode events' order.
BLOCK, MULTIPROCESSOR, START_NS, END_NS, CYCLES = 0, 1, 2, 3, 4
EVENTS = ("start", "wait", "first_tile", "tiles", "combined", "finished")
WORDS = CYCLES + len(EVENTS)
PHASES = ("wait", "first_tile", "tiles", "combined", "finished")  # each: from the event before it
RECORD_HEADER = Path(__file__).resolve().parents[1] / "csrc" / "include" / "timeline_record.h"
MAX_TASKS = 1 << 16
PATHS = {"mma": True, "simt": False}  # name: use_tensor_cores


def header_layout(path=RECORD_HEADER):
    """timeline_record.h's constants as {name: value} and its decode events' names in order (the
    reader's layout must match them)."""
    text = Path(path).read_text()
    consts = {m[0]: int(m[1]) for m in re.findall(r"constexpr int (k\w+) = (\d+);", text)}
    consts["kWords"] = consts["kCycles"] + consts["kEvents"]
    events = re.findall(r"^\s*(k\w+) = (\d+),", text, flags=re.M)
    return consts, [name for name, _ in sorted(events, key=lambda e: int(e[1]))]


def _quantile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _written(records):
    """The records' written rows (a start of -1: never written) as ints, and the first start."""
    rows = [list(map(int, r)) for r in records if int(r[START_NS]) >= 0]
    return rows, min((r[START_NS] for r in rows), default=0)


def summarize(records):
    """Summary of one launch's records (rows of WORDS ints; rows whose start is -1 were not
    written): the fields of the module docstring's table, times in microseconds."""
    rows, t0 = _written(records)
    if not rows:
        raise ValueError("no task was recorded: is this a TFO_TIMELINE build, and did the call use tensor cores?")
    first_of_block = {}
    for r in rows:  # in task order: a block's first task comes first
        first_of_block.setdefault(r[BLOCK], r)
    starts = [r[START_NS] for r in first_of_block.values()]
    ends = [r[END_NS] - t0 for r in rows]
    cycles = sum(r[CYCLES + len(EVENTS) - 1] - r[CYCLES] for r in rows)
    nanos = sum(r[END_NS] - r[START_NS] for r in rows)
    ghz = cycles / nanos if nanos > 0 else float("nan")
    summary = dict(tasks=len(rows), blocks=len(first_of_block), clock_ghz=ghz,
                   spread_us=(max(starts) - min(starts)) / 1e3, span_us=max(ends) / 1e3,
                   end_p50_us=_quantile(ends, 0.5) / 1e3, end_max_us=max(ends) / 1e3)
    for i, phase in enumerate(PHASES, start=1):
        # A task without kv rows stamps no first tile: its phases around it are left out.
        lengths = [(r[CYCLES + i] - r[CYCLES + i - 1]) / ghz / 1e3 for r in rows
                   if r[CYCLES + i] >= 0 and r[CYCLES + i - 1] >= 0]
        summary[f"{phase}_p50_us"] = _quantile(lengths, 0.5)
        summary[f"{phase}_p90_us"] = _quantile(lengths, 0.9)
    return summary


def multiprocessor_ends(records):
    """{multiprocessor: (blocks that ran on it, its last task's end in ns from the first start)}
    of one launch's records."""
    rows, t0 = _written(records)
    blocks, ends = {}, {}
    for r in rows:
        blocks.setdefault(r[MULTIPROCESSOR], set()).add(r[BLOCK])
        ends[r[MULTIPROCESSOR]] = max(ends.get(r[MULTIPROCESSOR], 0), r[END_NS] - t0)
    return {sm: (len(blocks[sm]), ends[sm]) for sm in blocks}


def _correlation(xs, ys):
    """Pearson's r of two lists; nan for fewer than three pairs or a list without spread."""
    if len(xs) < 3:
        return float("nan")
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return float("nan")


def multiprocessor_summary(records, earlier=None):
    """Where a launch's end spread lies between multiprocessors (the module docstring's sm
    columns): of `records` (one launch), and against `earlier` (the launch before, or None)."""
    now = multiprocessor_ends(records)
    by_count = {}
    for count, end in now.values():
        by_count.setdefault(count, []).append(end)
    common = max(by_count, key=lambda c: (len(by_count[c]), c)) if by_count else 0
    commons = by_count.get(common, [])
    sd = statistics.pstdev(commons) / 1e3 if commons else float("nan")
    corr = float("nan")
    if earlier is not None:
        before = multiprocessor_ends(earlier)
        both = sorted(sm for sm in now if now[sm][0] == common and before.get(sm, (None,))[0] == common)
        corr = _correlation([now[sm][1] for sm in both], [before[sm][1] for sm in both])
    counts = sorted(by_count, reverse=True)
    return dict(sm_blocks=" ".join(f"{len(by_count[c])}x{c}" for c in counts),
                sm_end_by_blocks=" ".join(f"{c}:{statistics.fmean(by_count[c]) / 1e3:.1f}" for c in sorted(by_count)),
                sm_end_sd_us=sd, sm_corr_calls=corr)


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "timeline", "batches 1, kv 4096, float16")
    parser.add_argument("--batches", default=None)
    parser.add_argument("--kv", default=None)
    parser.add_argument("--kv-dtypes", default="float16")
    parser.add_argument("--paths", default="mma", help="mma (tensor cores), simt (CUDA cores), or both")
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in (args.batches or ("1" if args.quick else "1,16,64")).split(",")]
    args.kv = [int(k) for k in (args.kv or ("4096" if args.quick else "1024,4096,16384")).split(",")]
    args.kv_dtypes = [getattr(torch, name) for name in args.kv_dtypes.split(",")]
    args.paths = args.paths.split(",")
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    if not set(args.paths) <= set(PATHS):
        parser.error(f"--paths: choose from {', '.join(PATHS)}")
    return args


def record_calls(tfo, call, calls):
    """Runs call() `calls` times, each recording into its own buffer; returns the buffers."""
    buffers = torch.full((calls, MAX_TASKS, WORDS), -1, dtype=torch.int64, device="cuda")
    try:
        for i in range(calls):
            tfo._C.set_decode_timeline(buffers[i].data_ptr(), MAX_TASKS)
            call()
    finally:
        tfo._C.set_decode_timeline(0, 0)
    torch.cuda.synchronize()
    return buffers.cpu()


def main(argv=None):
    args = parse_args(argv)
    from bench_decode import decode_call, decode_inputs  # noqa: E402 (needs the GPU)

    tfo = import_ours()
    if not tfo._C.timeline_built():
        sys.exit("decode_timeline.py needs a profiling build: TFO_TIMELINE=1 python setup.py build_ext --inplace")
    consts, events = header_layout()
    assert consts["kWords"] == WORDS and len(events) == len(EVENTS), "timeline_record.h and this reader disagree"
    workspace = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    rows, raw = [], []
    for path, kv_dtype, bs, kv_len in ((p, k, b, n) for p in args.paths for k in args.kv_dtypes
                                        for b in args.batches for n in args.kv):
        call = decode_call(tfo, PATHS[path], decode_inputs(bs, kv_len, kv_dtype), workspace)
        for _ in range(3):
            call()
        buffers = record_calls(tfo, call, args.calls)
        last = buffers[-1].tolist()
        summary = summarize(last)
        summary.update(multiprocessor_summary(last, buffers[-2].tolist() if args.calls > 1 else None))
        row = dict(path=path, kv_dtype=dtype_name(kv_dtype), batch=bs, kv_len=kv_len, **summary)
        rows.append(row)
        raw.append(dict(path=path, kv_dtype=row["kv_dtype"], batch=bs, kv_len=kv_len,
                        records=[r for r in last if r[START_NS] >= 0]))
        print(f"# {path} {row['kv_dtype']} bs {bs} kv {kv_len}: {summary['tasks']} tasks, span "
              f"{summary['span_us']:.1f} us", flush=True)
    columns = ["path", "kv_dtype", "batch", "kv_len", "tasks", "blocks", "spread_us", "span_us", "end_p50_us", "end_max_us"]
    columns += [f"{p}_{q}_us" for p in PHASES for q in ("p50", "p90")]
    columns += ["sm_blocks", "sm_end_by_blocks", "sm_end_sd_us", "sm_corr_calls"]
    table = markdown_table(columns, [[f"{r[c]:.2f}" if isinstance(r[c], float) else r[c] for c in columns] for r in rows])
    print(table)
    write_results(args.out, "timeline", dict(run_metadata(), calls=args.calls, raw=raw), rows, table)


if __name__ == "__main__":
    main()
