"""Two or more builds of torch_flashinfer_ops timed against each other on one GPU: a change is
kept only when it beats the tree it changes on the same machine at the same time, and one process's timings
drift by a few percent from the next, so the trees' benchmark processes alternate (A B, B A,
...) and each row compares the trees' best times over the rounds.

    python benchmarks/ab_trees.py --tree main=CHECKOUT_A --tree new=CHECKOUT_B --bench decode \\
        [--rounds 2] [--out DIR] -- --batches 1,16 --kv 1024,4096 --graph-calls 10 --uneven ''

Each tree is a checkout whose extension is built in place (`python setup.py build_ext
--inplace`, with the TFO_HEAD_DIMS / TFO_DTYPES knobs for a short build; a kernel variant under
evaluation is two copies of one commit, one built with TFO_KERNEL_VARIANTS); its process imports it
through PYTHONPATH and runs that tree's own benchmarks/bench_<bench>.py with the arguments after
`--`. Rows are matched by their shape fields; ours is timed by each row's "us" of the ours-*
paths (decode: lower is faster) or by "tflops"["ours"] (prefill: higher is faster), and the
table gives every tree's value per round and its best over the first tree's as a time ratio
(< 1: faster than the first tree). Writes DIR/ab_<bench>.json and ab_<bench>.md,
headed by each tree's commit and kernel variants.

--env LABEL:NAME=VALUE (repeatable) sets NAME in that tree's processes only, so one build can be
timed against itself under a run-time knob (two --tree labels on the same DIR). --args LABEL:ARGS
(repeatable) appends ARGS (split as a shell would) to that tree's benchmark arguments, so one build
can be timed against itself under a benchmark option (bench_decode.py's --ours-kv-chunk, say).

--outputs: instead of timing, each tree runs benchmarks/decode_outputs.py (a fixed set of seeded
decode calls) and the trees' outputs are compared bitwise against the first tree's.

Timed rounds start only on an idle GPU: where nvidia-smi lists compute processes (another
benchmark, or the workers of a test run that outlived it), a round waits up to --idle-wait
seconds for them to exit and otherwise stops the run, since their kernels would share the GPU
with the timed ones and move one tree's rounds but not the other's. --allow-shared-gpu skips
the check.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from bench_report import DEFAULT_OUT, markdown_table  # noqa: E402

# Row fields that are measurements or inputs, not the row's identity.
_NOT_KEYS = {"bytes", "flops", "kv_lens", "qo_lens"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=DIR",
                        help="a checkout with its extension built in place; give two or more, the first is the base")
    parser.add_argument("--env", action="append", default=[], metavar="LABEL:NAME=VALUE",
                        help="an environment variable for one tree's processes (repeatable)")
    parser.add_argument("--args", action="append", default=[], metavar="LABEL:ARGS",
                        help="benchmark arguments for one tree's processes, after the common ones (repeatable)")
    parser.add_argument("--bench", choices=("decode", "prefill"), default="decode")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--outputs", action="store_true", help="compare decode outputs bitwise instead of timing")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--idle-wait", type=float, default=60.0,
                        help="seconds a timed round waits for other GPU processes to exit (default 60)")
    parser.add_argument("--allow-shared-gpu", action="store_true",
                        help="time rounds even while other processes use the GPU")
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    args.bench_args = rest
    trees = []
    for spec in args.tree:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            parser.error(f"--tree takes LABEL=DIR, got {spec!r}")
        trees.append((label, os.path.abspath(path)))
    if len(trees) < 2 or len({label for label, _ in trees}) != len(trees):
        parser.error("give two or more --tree with distinct labels")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.trees = trees
    args.tree_envs = {label: {} for label, _ in trees}
    for spec in args.env:
        label, sep, assignment = spec.partition(":")
        name, eq, value = assignment.partition("=")
        if not sep or not eq or not name or label not in args.tree_envs:
            parser.error(f"--env takes LABEL:NAME=VALUE with a --tree label, got {spec!r}")
        args.tree_envs[label][name] = value
    args.tree_args = {label: [] for label, _ in trees}
    for spec in args.args:
        label, sep, extra = spec.partition(":")
        if not sep or label not in args.tree_args:
            parser.error(f"--args takes LABEL:ARGS with a --tree label, got {spec!r}")
        args.tree_args[label] += shlex.split(extra)
    return args


def other_gpu_processes():
    """PIDs of the compute processes nvidia-smi lists on the GPU the benchmarks run on (the first
    of CUDA_VISIBLE_DEVICES, else 0; this driver runs no kernels itself, so every one is another
    process's); None where there is no nvidia-smi to ask."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    out = subprocess.run([smi, "-i", gpu, "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        return None
    return [int(line) for line in out.stdout.split() if line.strip().isdigit()]


def wait_for_idle_gpu(wait_s, poll_s=1.0):
    """[] once no other process uses the GPU (or None where that cannot be asked), else the PIDs
    still there after wait_s seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        pids = other_gpu_processes()
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(poll_s)


def schedule(trees, rounds):
    """(round, label, path) in run order: the trees alternate, each round reversing the last."""
    order = []
    for r in range(rounds):
        for label, path in (trees if r % 2 == 0 else trees[::-1]):
            order.append((r, label, path))
    return order


def tree_env(path, extra=None):
    """The environment of a tree's process: its own package first on the path, and its --env
    variables."""
    return dict(os.environ, **(extra or {}), PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))


def env_note(path, extra=None):
    """How a printed command names its tree's environment: its path and its --env variables."""
    return f"(PYTHONPATH={path}" + "".join(f" {k}={v}" for k, v in (extra or {}).items()) + ")"


def command(path, bench, out_dir, bench_args, extra_env=None):
    """The benchmark process of one tree: its own script, its own package first on the path."""
    script = os.path.join(path, "benchmarks", f"bench_{bench}.py")
    return [sys.executable, script, "--out", out_dir, *bench_args], tree_env(path, extra_env)


def build_note(meta):
    """What a tree's benchmark process ran: its commit and the kernel variants of its build
    (setup.py's TFO_KERNEL_VARIANTS), from the result file's metadata."""
    variants = meta.get("kernel_variants") or "none (default kernels)"
    return f"commit {meta.get('commit', 'unknown')}, kernel variants: {variants}"


def setting_note(args, label):
    """What a tree's processes got beyond its build: its --env variables and --args."""
    env = " ".join(f"{k}={v}" for k, v in args.tree_envs[label].items())
    extra = " ".join(shlex.quote(a) for a in args.tree_args[label])
    return (f"; env {env}" if env else "") + (f"; args {extra}" if extra else "")


def row_key(row):
    """The fields that name a row's shape (strings, integers and flags)."""
    return tuple(sorted((k, v) for k, v in row.items()
                        if k not in _NOT_KEYS and isinstance(v, (str, int, bool))))


def row_times(row):
    """{path: a time-like value (lower is faster)} of ours in one row."""
    if "us" in row:
        return {p: t for p, t in row["us"].items() if p.startswith("ours") and t}
    tflops = row.get("tflops", {}).get("ours")
    return {"ours": 1.0 / tflops} if tflops else {}


def compare(results, labels):
    """results: {label: [rows of round 0, rows of round 1, ...]}. Returns one entry per (row, path)
    of the first tree: its shape, each tree's values per round and best / the first tree's best."""
    base = labels[0]
    entries = []
    for row in results[base][0]:
        key = row_key(row)
        for path in row_times(row):
            values = {}
            for label in labels:
                per_round = []
                for rows in results[label]:
                    match = next((r for r in rows if row_key(r) == key), None)
                    per_round.append(row_times(match).get(path) if match else None)
                values[label] = per_round
            best = {label: min((v for v in vals if v), default=None) for label, vals in values.items()}
            entries.append({"shape": dict(key), "path": path, "values": values,
                            "vs_first": {label: (best[label] / best[base]) if best[label] and best[base] else None
                                         for label in labels[1:]}})
    return entries


def shape_text(shape):
    return " ".join(f"{k}={v}" for k, v in shape.items() if k != "section" or v != "equal")


def table(entries, labels, prefill):
    def shown(v):  # prefill times are 1 / TFLOP/s: show TFLOP/s
        return "n/a" if v is None else (f"{1.0 / v:.1f}" if prefill else f"{v:.1f}")

    unit = "TFLOP/s" if prefill else "us"
    headers = (["shape", "path"] + [f"{label} {unit} (per round)" for label in labels]
               + [f"{label} / {labels[0]} (time)" for label in labels[1:]])
    body = [[shape_text(e["shape"]), e["path"]] + [" / ".join(shown(v) for v in e["values"][label]) for label in labels]
            + ["n/a" if e["vs_first"][label] is None else f"{e['vs_first'][label]:.3f}" for label in labels[1:]]
            for e in entries]
    return markdown_table(headers, body)


def compare_outputs(files, labels):
    """{label: path of decode_outputs.py's file}: per call, whether each tree's out and lse are
    bitwise the first tree's, and the largest difference where not."""
    import torch

    loaded = {label: torch.load(files[label]) for label in labels}
    base = loaded[labels[0]]
    lines = []
    for name in base:
        cells = []
        for label in labels[1:]:
            other = loaded[label].get(name)
            if other is None:
                cells.append(f"{label}: missing")
                continue
            same = all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(base[name], other))
            diff = max(float((a.double() - b.double()).abs().nan_to_num(float("inf")).max()) for a, b in zip(base[name], other))
            cells.append(f"{label}: " + ("bitwise" if same else f"max |diff| {diff:.3g}"))
        lines.append(f"{name}: " + ", ".join(cells))
    return lines


def main(argv=None):
    args = parse_args(argv)
    labels = [label for label, _ in args.trees]
    os.makedirs(args.out, exist_ok=True)
    if args.outputs:
        files = {}
        for label, path in args.trees:
            files[label] = os.path.join(args.out, f"decode_outputs_{label}.pt")
            cmd = [sys.executable, os.path.join(BENCH_DIR, "decode_outputs.py"), "--out", files[label]]
            print("#", " ".join(cmd), env_note(path, args.tree_envs[label]), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, env=tree_env(path, args.tree_envs[label]), check=True)
        if not args.dry_run:
            print("\n".join(compare_outputs(files, labels)))
        return
    results = {label: [None] * args.rounds for label in labels}
    builds = {}
    for r, label, path in schedule(args.trees, args.rounds):
        out_dir = os.path.join(args.out, f"ab_{label}_r{r + 1}")
        cmd, env = command(path, args.bench, out_dir, args.bench_args + args.tree_args[label], args.tree_envs[label])
        print("#", " ".join(cmd), env_note(path, args.tree_envs[label]), flush=True)
        if args.dry_run:
            continue
        if not args.allow_shared_gpu:
            pids = wait_for_idle_gpu(args.idle_wait)
            if pids is None and r == 0 and label == labels[0]:
                print("# GPU sharing not checked (no nvidia-smi)", flush=True)
            if pids:
                sys.exit(f"ab_trees: processes {pids} still use the GPU after {args.idle_wait:g} s: their kernels "
                         "would share it with the timed ones. Stop them, or pass --allow-shared-gpu.")
        subprocess.run(cmd, env=env, check=True)
        with open(os.path.join(out_dir, f"{args.bench}.json")) as f:
            result = json.load(f)
        results[label][r] = result["rows"]
        builds[label] = build_note(result.get("meta", {}))
    if args.dry_run:
        return
    entries = compare(results, labels)
    text = "\n".join([f"# {label}: {builds[label]}{setting_note(args, label)}" for label in labels] + [""]
                     + [table(entries, labels, args.bench == "prefill")])
    print(text)
    with open(os.path.join(args.out, f"ab_{args.bench}.json"), "w") as f:
        json.dump({"trees": dict(args.trees), "builds": builds, "rounds": args.rounds,
                   "bench_args": args.bench_args, "tree_args": args.tree_args, "tree_envs": args.tree_envs,
                   "entries": entries}, f, indent=1)
    with open(os.path.join(args.out, f"ab_{args.bench}.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
