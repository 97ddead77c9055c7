"""A kernel variant under evaluation (csrc/hip/kernels/kernel_variants.h) against the default
kernels of the same commit, on one GPU, in one command:

    python benchmarks/ab_variant.py --variants NAME[,NAME] --bench prefill --work DIR \\
        [--tests tests/test_gpu_prefill.py] [--rounds 2] -- --lengths 1024 --timing graph

1. exports this checkout's HEAD twice (git archive: committed files only) to DIR/default and
   DIR/variant;
2. builds both in place at once (setup.py build_ext --inplace, the variant tree with
   TFO_KERNEL_VARIANTS; TFO_HEAD_DIMS, TFO_DTYPES and TFO_CUDA_ARCHS from the environment, the
   MAX_JOBS given split between the two builds);
3. runs the GPU tests named by --tests (pytest -m gpu) in the variant tree: a variant is timed
   only after its kernels computed on the GPU what the float64 reference computes;
4. times the two trees with ab_trees.py (their benchmark processes alternating), which writes
   DIR/ab_<bench>.json and .md, headed by each tree's commit and kernel variants.

--dry-run prints the commands without running them.
"""
import argparse
import os
import shlex
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(REPO, "tools"))

import ab_trees  # noqa: E402
import kernel_variants  # noqa: E402


def known_variants():
    """The variant names setup.py accepts: kernel_variants.h's switches, lower case."""
    return kernel_variants.known()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="comma list of kernel variants to build in the variant tree")
    parser.add_argument("--bench", choices=("decode", "prefill"), required=True)
    parser.add_argument("--work", required=True, help="a directory for the two trees and the results")
    parser.add_argument("--tests", action="append", default=[],
                        help="GPU test files (or node ids) to run in the variant tree before timing (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 2,
                        help="compile jobs of both builds together (default: the CPU count)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = []
    if "--" in argv:
        at = argv.index("--")
        argv, bench_args = argv[:at], argv[at + 1:]
    args = parser.parse_args(argv)
    args.bench_args = bench_args
    names = kernel_variants.names(args.variants)
    known = known_variants()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        parser.error(f"--variants: unknown or none given ({', '.join(unknown) or 'empty'}); known: "
                     f"{', '.join(known) or 'none'}")
    args.variants = ",".join(names)
    return args


def tree_dirs(work):
    return {"default": os.path.join(work, "default"), "variant": os.path.join(work, "variant")}


def export_command(tree):
    """HEAD's files into tree (which must not exist yet)."""
    return f"mkdir {shlex.quote(tree)} && git -C {shlex.quote(REPO)} archive HEAD | tar -x -C {shlex.quote(tree)}"


def build_jobs(trees, variants, max_jobs, environ=None):
    """(label, command, cwd, env) of the two in-place builds, to run at once."""
    environ = dict(os.environ if environ is None else environ)
    environ.pop("TFO_KERNEL_VARIANTS", None)  # the default tree builds the default kernels
    jobs_each = str(max(1, max_jobs // 2))
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    return [("default", cmd, trees["default"], dict(environ, MAX_JOBS=jobs_each)),
            ("variant", cmd, trees["variant"], dict(environ, MAX_JOBS=jobs_each, TFO_KERNEL_VARIANTS=variants))]


def test_command(tree, tests):
    """The GPU tests in the variant tree (its in-place build first on the path)."""
    return [sys.executable, "-m", "pytest", "-q", "-m", "gpu", *tests], ab_trees.tree_env(tree)


def ab_argv(trees, bench, rounds, out, bench_args):
    return ["--tree", f"default={trees['default']}", "--tree", f"variant={trees['variant']}", "--bench", bench,
            "--rounds", str(rounds), "--out", out, "--", *bench_args]


def main(argv=None):
    args = parse_args(argv)
    work = os.path.abspath(args.work)
    trees = tree_dirs(work)
    if subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True).stdout.strip():
        print("# warning: this checkout has uncommitted changes; the trees hold HEAD without them", flush=True)
    exports = [export_command(tree) for tree in trees.values()]
    builds = build_jobs(trees, args.variants, args.max_jobs)
    tests = test_command(trees["variant"], args.tests) if args.tests else None
    ab = ab_argv(trees, args.bench, args.rounds, work, args.bench_args)
    for line in exports:
        print("#", line, flush=True)
    for label, cmd, cwd, env in builds:
        knob = f" TFO_KERNEL_VARIANTS={env['TFO_KERNEL_VARIANTS']}" if "TFO_KERNEL_VARIANTS" in env else ""
        print(f"# (cd {cwd} && MAX_JOBS={env['MAX_JOBS']}{knob} {' '.join(cmd)})", flush=True)
    if tests:
        print(f"# (cd {trees['variant']} && {' '.join(tests[0])})", flush=True)
    print("#", sys.executable, os.path.join(BENCH_DIR, "ab_trees.py"), " ".join(shlex.quote(a) for a in ab), flush=True)
    if args.dry_run:
        return
    os.makedirs(work, exist_ok=True)
    for line in exports:
        subprocess.run(line, shell=True, check=True)
    logs = {label: open(os.path.join(work, f"build_{label}.log"), "w") for label, *_ in builds}
    running = [(label, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logs[label], stderr=subprocess.STDOUT))
               for label, cmd, cwd, env in builds]
    failed = [label for label, proc in running if proc.wait() != 0]
    for log in logs.values():
        log.close()
    if failed:
        sys.exit(f"ab_variant: the {' and '.join(failed)} build failed (see {work}/build_<label>.log)")
    if tests:
        cmd, env = tests
        status = subprocess.run(cmd, cwd=trees["variant"], env=env).returncode
        if status != 0:  # 5: no GPU test collected (no GPU, or --tests names none)
            sys.exit(f"ab_variant: the variant's GPU tests did not pass (pytest exit code {status}); not timed")
    ab_trees.main(ab)


if __name__ == "__main__":
    main()
