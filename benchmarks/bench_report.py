"""Reporting shared by the benchmarks: run metadata, optional peers, markdown tables, the JSON
of all rows and a PNG plot (matplotlib with the Agg backend; skipped with a note if missing)."""
import argparse
import datetime
import importlib
import json
import math
import os
import subprocess
import sys

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(BENCH_DIR, "results")
CHECKED_MODE_ENV = "TORCH_FLASHINFER_OPS_DEBUG"

_reported_failures = set()


def benchmark_parser(doc, name, quick):
    """The options every benchmark takes: --out (where name.json/.md/.png go) and --quick."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"directory for {name}.json/.md/.png (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"reduced shapes for a smoke test: {quick}")
    return parser


def dtype_name(dtype):
    """'float16' for torch.float16."""
    return str(dtype).replace("torch.", "")


def parse_with_shape_defaults(parser, quick, full, argv=None):
    """parser.parse_args(argv), then every shape option left unset takes its value from `quick`
    (with --quick) or `full`: the keys of both are the option names."""
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def import_ours():
    """torch_flashinfer_ops: the installed package, else the one in this checkout (an in-place build)."""
    try:
        return importlib.import_module("torch_flashinfer_ops")
    except ModuleNotFoundError as error:
        if error.name != "torch_flashinfer_ops":
            raise
        sys.path.insert(0, os.path.dirname(BENCH_DIR))
        return importlib.import_module("torch_flashinfer_ops")


def git_commit():
    """Short commit of the checkout, with '-dirty' when tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", BENCH_DIR, *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(**extra):
    """Device, UTC date, commit and versions: stored with every result file."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "device": torch.cuda.get_device_name(),
        "sm_count": props.multi_processor_count,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "checked_mode": os.environ.get(CHECKED_MODE_ENV, "0") not in ("", "0"),
        "kernel_variants": import_ours()._C.kernel_variants_built(),
        **extra,
    }


def header_lines(meta, *notes):
    lines = [f"# device: {meta['device']} ({meta['sm_count']} SMs); date: {meta['date_utc']} UTC; "
             f"commit: {meta['commit']}; torch {meta['torch']} (CUDA {meta['cuda']})"]
    if meta.get("flashinfer"):
        lines.append(f"# upstream flashinfer {meta['flashinfer']}")
    if meta.get("kernel_variants"):
        lines.append(f"# kernel variants under evaluation (an A/B build): {meta['kernel_variants']}")
    if meta.get("checked_mode"):
        lines.append(f"# WARNING: {CHECKED_MODE_ENV} is set: checked mode synchronises per call, "
                     "so these are not serving times")
    return lines + [f"# {note}" for note in notes]


def gpu_libraries(script):
    """(torch_flashinfer_ops, upstream flashinfer or None) for a GPU benchmark's run; exits with
    a message naming `script` where no CUDA GPU is present. Upstream is optional: where it is
    missing, one line says why and its columns show n/a."""
    if not torch.cuda.is_available():
        sys.exit(f"{script} needs a CUDA GPU")
    return import_ours(), optional_import("flashinfer", "upstream flashinfer")


def by_library(ours, upstream):
    """The libraries a benchmark compares, by name: "ours", and "flashinfer" where installed."""
    return {"ours": ours, **({"flashinfer": upstream} if upstream else {})}


def optional_import(module, label):
    """The module, or None after printing one line saying why it is left out."""
    try:
        return importlib.import_module(module)
    except Exception as error:  # missing or broken: reported, not fatal
        print(f"{label} not available ({type(error).__name__}: {first_line(error)}); its columns show n/a")
        return None


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def report_failure(name, error):
    """Prints one line per distinct failure of a peer; the caller records n/a."""
    key = (name, first_line(error))
    if key not in _reported_failures:
        _reported_failures.add(key)
        print(f"{name} failed ({type(error).__name__}: {first_line(error)}); shown as n/a", flush=True)


def attempt(name, fn):
    """fn() or None when it raises (reported once per distinct error)."""
    try:
        return fn()
    except Exception as error:
        report_failure(name, error)
        return None


def interleaved_seconds(makers, timer, iters, label="", unchecked=()):
    """name -> seconds per call of the call each maker builds (None where the maker is None or
    building, preparing or timing fails, or where its output agrees with no other call's):
    every call built and prepared first, then their samples taken in turn (timer:
    cuda_timing.interleaved_for's prepare and seconds), then their outputs compared
    (disagreeing_outputs: the calls of a row compute the same attention). `unchecked`: names
    timed in turn with the others but computing something else (a reference timed beside the
    row), whose outputs are not compared. `label` follows the names in failure reports."""
    prepare, seconds_of = timer
    samplers = {}
    for name, make in makers.items():
        sampler = None if make is None else attempt(f"{name}{label}", lambda make=make: prepare(make()))
        if sampler is not None:
            samplers[name] = sampler
    seconds = (attempt(f"timing{label}", lambda: seconds_of(samplers, iters)) if samplers else None) or {}
    if seconds:
        compared = {name: s for name, s in samplers.items() if name not in unchecked}
        for name, diff in (attempt(f"output check{label}", lambda: disagreeing_outputs(compared)) or {}).items():
            report_failure(f"{name}{label}", RuntimeError(
                f"its output agrees with no other call's (max |difference| {diff:.3g}); its time is left out"))
            seconds[name] = None
    return {name: seconds.get(name) for name in makers}


def _first_tensor(value):
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


OUTPUT_ATOL, OUTPUT_RTOL = 1e-3, 2e-2  # the rounding two libraries' attention kernels differ by


def _max_difference(a, b):
    """max |a - b| (NaN where either holds NaN), or None across shapes."""
    return (a.float() - b.float()).abs().max().item() if a.shape == b.shape else None


def _within(diff, reference_peak, atol=OUTPUT_ATOL, rtol=OUTPUT_RTOL):
    return diff is not None and diff <= atol + rtol * reference_peak


def outputs_agree(a, b, atol=OUTPUT_ATOL, rtol=OUTPUT_RTOL):
    """Whether two outputs of one attention (any 16-bit or float dtype) are the same within the
    rounding two libraries' kernels differ by; NaN (a poisoned output left unwritten) never is."""
    return _within(_max_difference(a, b), b.float().abs().max().item(), atol, rtol)


def disagreeing_outputs(samplers, sync=None):
    """name -> max |difference| to the nearest other output, for each prepared call whose output
    agrees with no other's (outputs_agree). A prepared call carries its `output` (cuda_timing's
    replays and back-to-back runs: what its calls return, the first tensor where that is a
    tuple); each is filled with NaN, every call runs once more, and the outputs are compared
    pairwise. A replay that did not run its calls (stale or freed memory under a graph) leaves
    NaN or another schedule's result and agrees with none. Fewer than two outputs: nothing to
    compare."""
    sync = sync or (torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None))
    names = [name for name, s in samplers.items() if _first_tensor(getattr(s, "output", None)) is not None]
    if len(names) < 2:
        return {}
    for name in names:
        _first_tensor(samplers[name].output).fill_(float("nan"))
    for name in names:
        samplers[name]()
    sync()
    # Each output widened, its peak and each pair's difference taken once (a row's outputs can
    # be tens of millions of elements).
    outputs = {name: _first_tensor(samplers[name].output).float() for name in names}
    peaks = {name: out.abs().max().item() for name, out in outputs.items()}
    diffs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diffs[a, b] = diffs[b, a] = _max_difference(outputs[a], outputs[b])
    bad = {}
    for name in names:
        others = [other for other in names if other != name]
        if not any(_within(diffs[name, other], peaks[other]) for other in others):
            bad[name] = min(float("inf") if diffs[name, other] is None else diffs[name, other] for other in others)
    return bad


def fmt(value, spec=".1f", suffix=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{suffix}"


def ratio(a, b):
    return a / b if a and b else None


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_partial(out_dir, name, meta, rows):
    """<out_dir>/<name>.json with the rows measured so far, marked "partial": written after each
    row, so that a run stopped early (a time limit, a fault) leaves what it measured;
    write_results replaces it at the end."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"meta": meta, "rows": rows, "partial": True}, f, indent=1)
    os.replace(path + ".tmp", path)  # never a half-written file


def write_results(out_dir, name, meta, rows, text):
    """<out_dir>/<name>.json (meta + every row) and <name>.md (the printed text)."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    print(f"# wrote {json_path} and {name}.md")


def save_bar_plot(path, panels):
    """One grouped-bar panel per entry of `panels`: dicts with title, ylabel, labels (x),
    series ({name: [value or None per label]}) and optional hlines ({label: y})."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"# matplotlib not installed: plot {path} skipped")
        return
    panels = [p for p in panels if p["labels"]]
    if not panels:
        return
    width = max(8.0, 0.35 * max(len(p["labels"]) * len(p["series"]) for p in panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.5 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        _bar_panel(ax, panel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"# wrote {path}")


def _bar_panel(ax, panel):
    labels, series = panel["labels"], panel["series"]
    bar = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * bar for j in range(len(labels))]
        ax.bar(xs, [float("nan") if v is None else v for v in values], bar, label=name)
    for label, y in panel.get("hlines", {}).items():
        ax.axhline(y, linestyle="--", linewidth=1, color="gray")
        ax.annotate(label, (0, y), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_title(panel["title"])
    ax.set_ylabel(panel["ylabel"])
    ax.legend(fontsize=8)
