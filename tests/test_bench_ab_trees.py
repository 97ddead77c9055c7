"""The A/B driver of the benchmarks (benchmarks/ab_trees.py), on the host: the trees' processes
alternate, each runs its own tree's script with its own package first on the path, and rows are
matched across trees by their shape and compared by their best round. Also the fixed decode
calls of benchmarks/decode_outputs.py and their bitwise comparison."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
ab = pytest.importorskip("ab_trees")
decode_outputs = pytest.importorskip("decode_outputs")


def test_trees_alternate_and_reverse_each_round():
    trees = [("a", "/x/a"), ("b", "/x/b"), ("c", "/x/c")]
    order = [(r, label) for r, label, _ in ab.schedule(trees, 3)]
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (2, "c")]


def test_each_tree_runs_its_own_script_with_its_package_first(tmp_path):
    cmd, env = ab.command("/x/b", "prefill", str(tmp_path), ["--lengths", "1024"])
    assert cmd[1] == os.path.join("/x/b", "benchmarks", "bench_prefill.py")
    assert cmd[2:] == ["--out", str(tmp_path), "--lengths", "1024"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/x/b"


def test_arguments_after_the_separator_go_to_the_benchmark():
    args = ab.parse_args(["--tree", "main=/x/a", "--tree", "new=/x/b", "--", "--batches", "1", "--uneven", ""])
    assert [label for label, _ in args.trees] == ["main", "new"] and args.bench_args == ["--batches", "1", "--uneven", ""]
    for bad in (["--tree", "main=/x/a"], ["--tree", "a=/x/a", "--tree", "a=/x/b"], ["--tree", "/x/a", "--tree", "b=/x/b"]):
        with pytest.raises(SystemExit):
            ab.parse_args(bad)


def test_a_knob_goes_to_one_trees_processes_only():
    args = ab.parse_args(["--tree", "base=/x/a", "--tree", "knob=/x/a", "--env", "knob:TFO_X=7", "--", "--rounds"])
    assert args.tree_envs == {"base": {}, "knob": {"TFO_X": "7"}}
    _, base_env = ab.command("/x/a", "prefill", "/o", [], args.tree_envs["base"])
    _, knob_env = ab.command("/x/a", "prefill", "/o", [], args.tree_envs["knob"])
    assert knob_env["TFO_X"] == "7" and base_env.get("TFO_X") == os.environ.get("TFO_X")
    for bad in (["--env", "other:TFO_X=1"], ["--env", "knob:TFO_X"], ["--env", "TFO_X=1"]):
        with pytest.raises(SystemExit):
            ab.parse_args(["--tree", "base=/x/a", "--tree", "knob=/x/a", *bad])


def test_benchmark_arguments_go_to_one_trees_processes_only(monkeypatch, tmp_path):
    """--args: one build timed against itself under a benchmark option; the other tree's
    processes keep the common arguments, and the table says which tree had which."""
    args = ab.parse_args(["--tree", "base=/x/a", "--tree", "unsplit=/x/a", "--args", "unsplit:--ours-kv-chunk 0",
                          "--", "--batches", "128"])
    assert args.tree_args == {"base": [], "unsplit": ["--ours-kv-chunk", "0"]}
    for bad in (["--args", "other:--x 1"], ["--args", "--x 1"]):
        with pytest.raises(SystemExit):
            ab.parse_args(["--tree", "base=/x/a", "--tree", "unsplit=/x/a", *bad])
    monkeypatch.setattr(ab, "other_gpu_processes", lambda: [])
    seen = {}

    def fake_run(cmd, env, check):
        out_dir = cmd[cmd.index("--out") + 1]
        seen[os.path.basename(out_dir)] = cmd[cmd.index("--out") + 2:]
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "decode.json"), "w") as f:
            json.dump({"meta": {"commit": "abc1234"}, "rows": [_decode_row(128, 16384, 10.0)]}, f)

    monkeypatch.setattr(ab.subprocess, "run", fake_run)
    ab.main(["--tree", "base=/x/a", "--tree", "unsplit=/x/a", "--args", "unsplit:--ours-kv-chunk 0",
             "--out", str(tmp_path), "--", "--batches", "128"])
    assert seen["ab_base_r1"] == ["--batches", "128"]
    assert seen["ab_unsplit_r1"] == seen["ab_unsplit_r2"] == ["--batches", "128", "--ours-kv-chunk", "0"]
    text = (tmp_path / "ab_decode.md").read_text()
    assert "# unsplit: commit abc1234, kernel variants: none (default kernels); args --ours-kv-chunk 0" in text
    assert "# base: commit abc1234, kernel variants: none (default kernels)\n" in text


def _decode_row(bs, kv, mma_us, simt_us=None, kv_dtype="float16"):
    return {"section": "equal", "batch": bs, "kv_len": kv, "kv_dtype": kv_dtype, "q_dtype": "float16", "bytes": 123,
            "us": {"ours-simt": simt_us, "ours-mma": mma_us, "flashinfer-mma": 99.0}}


def test_rows_match_by_shape_and_compare_best_rounds():
    results = {
        "main": [[_decode_row(1, 4096, 10.0, 12.0), _decode_row(64, 1024, 70.0)],
                 [_decode_row(1, 4096, 9.8, 12.5), _decode_row(64, 1024, 71.0)]],
        # Rows in another order, and one row missing in a round: matched by shape, not by place.
        "new": [[_decode_row(64, 1024, 69.0), _decode_row(1, 4096, 9.4, 12.0)],
                [_decode_row(1, 4096, 9.1, 11.0)]],
    }
    entries = {(e["shape"]["batch"], e["path"]): e for e in ab.compare(results, ["main", "new"])}
    assert set(entries) == {(1, "ours-simt"), (1, "ours-mma"), (64, "ours-mma")}  # upstream's paths are not ours
    assert entries[(1, "ours-mma")]["values"] == {"main": [10.0, 9.8], "new": [9.4, 9.1]}
    assert entries[(1, "ours-mma")]["vs_first"]["new"] == pytest.approx(9.1 / 9.8)
    assert entries[(1, "ours-simt")]["vs_first"]["new"] == pytest.approx(11.0 / 12.0)
    assert entries[(64, "ours-mma")]["values"]["new"] == [69.0, None]
    assert entries[(64, "ours-mma")]["vs_first"]["new"] == pytest.approx(69.0 / 70.0)
    text = ab.table(list(entries.values()), ["main", "new"], prefill=False)
    assert "10.0 / 9.8" in text and "0.929" in text


def test_prefill_rows_compare_as_times():
    row = lambda tflops, causal: {"section": "single", "kind": "single", "dtype": "float16", "head_dim": 128,  # noqa: E731
                                  "causal": causal, "batch": 1, "L": 4096, "flops": 1e12,
                                  "tflops": {"ours": tflops, "flashinfer-fa2": 300.0}}
    results = {"main": [[row(350.0, True), row(380.0, False)]], "new": [[row(385.0, True), row(380.0, False)]]}
    entries = ab.compare(results, ["main", "new"])
    by_causal = {e["shape"]["causal"]: e for e in entries}
    assert by_causal[True]["vs_first"]["new"] == pytest.approx(350.0 / 385.0)  # faster: under 1
    assert by_causal[False]["vs_first"]["new"] == pytest.approx(1.0)
    assert "385.0" in ab.table(entries, ["main", "new"], prefill=True)


def test_a_dry_run_prints_every_process_in_order(tmp_path, capsys):
    ab.main(["--tree", "a=/x/a", "--tree", "b=/x/b", "--rounds", "2", "--out", str(tmp_path), "--dry-run", "--",
             "--batches", "1"])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("#")]
    assert [l.split("PYTHONPATH=")[1].rstrip(")") for l in lines] == ["/x/a", "/x/b", "/x/b", "/x/a"]
    assert all("--batches 1" in l and "bench_decode.py" in l for l in lines)


def test_outputs_compare_bitwise_and_report_the_largest_difference(tmp_path):
    out = torch.randn(2, 4, 8, dtype=torch.float16)
    lse = torch.randn(2, 4)
    moved = out.clone()
    moved[0, 0, 0] += 0.25
    torch.save({"call": (out, lse), "other": (out, lse)}, tmp_path / "a.pt")
    torch.save({"call": (out.clone(), lse.clone()), "other": (moved, lse)}, tmp_path / "b.pt")
    lines = ab.compare_outputs({"a": tmp_path / "a.pt", "b": tmp_path / "b.pt"}, ["a", "b"])
    assert lines[0] == "call: b: bitwise"
    assert lines[1].startswith("other: b: max |diff| 0.25")


def test_decode_output_calls_cover_both_paths_and_caches():
    table = decode_outputs.calls()
    assert len(table) == 32 and len(set(table)) == 32
    assert {mma for _, _, mma in table.values()} == {False, True}
    assert {kv_dtype for _, kv_dtype, _ in table.values()} == {torch.float16, torch.float8_e4m3fn}
    with pytest.raises(SystemExit, match="unknown calls"):
        decode_outputs.main(["--out", "x.pt", "--calls", "mma-f16-bs1-kv4096,no-such-call"])


def test_a_timed_round_waits_for_other_gpu_processes(monkeypatch):
    answers = iter([[4242], [4242], []])
    monkeypatch.setattr(ab, "other_gpu_processes", lambda: next(answers))
    monkeypatch.setattr(ab.time, "sleep", lambda s: None)
    assert ab.wait_for_idle_gpu(60.0) == []
    monkeypatch.setattr(ab, "other_gpu_processes", lambda: None)
    assert ab.wait_for_idle_gpu(60.0) is None  # nothing to ask: not checked


def test_a_gpu_still_shared_stops_the_run_before_any_round(monkeypatch, tmp_path):
    monkeypatch.setattr(ab, "other_gpu_processes", lambda: [4242])
    monkeypatch.setattr(ab.time, "sleep", lambda s: None)
    launched = []
    monkeypatch.setattr(ab.subprocess, "run", lambda *a, **k: launched.append(a))
    with pytest.raises(SystemExit, match="4242"):
        ab.main(["--tree", "a=/x/a", "--tree", "b=/x/b", "--out", str(tmp_path), "--idle-wait", "0"])
    assert launched == []
    # --allow-shared-gpu times the rounds anyway (here: the first process is launched).
    with pytest.raises(FileNotFoundError):
        ab.main(["--tree", "a=/x/a", "--tree", "b=/x/b", "--out", str(tmp_path), "--allow-shared-gpu"])
    assert len(launched) == 1


def test_gpu_processes_are_asked_of_the_benchmarks_gpu(monkeypatch):
    calls = []

    class Done:
        returncode, stdout = 0, "123\n456\n"

    monkeypatch.setattr(ab.shutil, "which", lambda name: "/bin/" + name)
    monkeypatch.setattr(ab.subprocess, "run", lambda cmd, **k: calls.append(cmd) or Done())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert ab.other_gpu_processes() == [123, 456]
    assert calls[0][1:3] == ["-i", "3"]
    monkeypatch.setattr(ab.shutil, "which", lambda name: None)
    assert ab.other_gpu_processes() is None


def test_the_table_is_headed_by_each_trees_commit_and_kernel_variants(monkeypatch, tmp_path):
    """Two builds of one commit (one with TFO_KERNEL_VARIANTS): the output says which is which,
    from each result file's metadata."""
    monkeypatch.setattr(ab, "other_gpu_processes", lambda: [])
    metas = {"/x/a": {"commit": "abc1234", "kernel_variants": ""},
             "/x/b": {"commit": "abc1234", "kernel_variants": "prefill_example"}}

    def fake_run(cmd, env, check):
        out_dir = cmd[cmd.index("--out") + 1]
        os.makedirs(out_dir, exist_ok=True)
        tree = env["PYTHONPATH"].split(os.pathsep)[0]
        with open(os.path.join(out_dir, "decode.json"), "w") as f:
            json.dump({"meta": metas[tree], "rows": [_decode_row(1, 4096, 10.0 if tree == "/x/a" else 9.0)]}, f)

    monkeypatch.setattr(ab.subprocess, "run", fake_run)
    ab.main(["--tree", "default=/x/a", "--tree", "variant=/x/b", "--out", str(tmp_path)])
    text = (tmp_path / "ab_decode.md").read_text()
    assert "# default: commit abc1234, kernel variants: none (default kernels)" in text
    assert "# variant: commit abc1234, kernel variants: prefill_example" in text
    assert "| 0.900 |" in text
    saved = json.loads((tmp_path / "ab_decode.json").read_text())
    assert saved["builds"]["variant"].endswith("prefill_example")


ab_variant = pytest.importorskip("ab_variant")


@pytest.fixture
def a_known_variant(monkeypatch):
    """A variant name the driver accepts (kernel_variants.h may list none at a given time)."""
    monkeypatch.setattr(ab_variant, "known_variants", lambda: ["prefill_example"])
    return "prefill_example"


def test_the_driver_reads_the_headers_switches():
    assert ab_variant.known_variants() == ab_variant.kernel_variants.known()


def test_a_variant_is_built_beside_the_default_of_the_same_commit(a_known_variant):
    known = ab_variant.known_variants()
    args = ab_variant.parse_args(["--variants", known[0].upper(), "--bench", "prefill", "--work", "/w",
                                  "--tests", "tests/test_gpu_prefill.py", "--max-jobs", "16", "--", "--lengths", "1024"])
    assert args.variants == known[0] and args.bench_args == ["--lengths", "1024"]
    trees = ab_variant.tree_dirs("/w")
    jobs = ab_variant.build_jobs(trees, args.variants, args.max_jobs,
                                 environ={"TFO_KERNEL_VARIANTS": "stale", "TFO_HEAD_DIMS": "128"})
    (d_label, d_cmd, d_cwd, d_env), (v_label, v_cmd, v_cwd, v_env) = jobs
    assert (d_label, d_cwd, v_label, v_cwd) == ("default", "/w/default", "variant", "/w/variant")
    assert d_cmd == v_cmd and d_cmd[1:] == ["setup.py", "build_ext", "--inplace"]
    # The default tree never inherits a variant from the caller's environment; both keep the
    # other knobs and share the compile jobs.
    assert "TFO_KERNEL_VARIANTS" not in d_env and v_env["TFO_KERNEL_VARIANTS"] == known[0]
    assert d_env["TFO_HEAD_DIMS"] == v_env["TFO_HEAD_DIMS"] == "128" and d_env["MAX_JOBS"] == v_env["MAX_JOBS"] == "8"
    cmd, env = ab_variant.test_command(trees["variant"], args.tests)
    assert cmd[1:] == ["-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu_prefill.py"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/w/variant"
    ab_args = ab.parse_args(ab_variant.ab_argv(trees, "prefill", 2, "/w", args.bench_args))
    assert ab_args.trees == [("default", "/w/default"), ("variant", "/w/variant")]
    assert ab_args.bench == "prefill" and ab_args.bench_args == ["--lengths", "1024"]


def test_an_unknown_variant_is_refused_before_anything_runs(a_known_variant, capsys):
    for bad in ("no_such_variant", ""):
        with pytest.raises(SystemExit):
            ab_variant.parse_args(["--variants", bad, "--bench", "decode", "--work", "/w"])
    assert "no_such_variant" in capsys.readouterr().err


def test_a_variant_dry_run_prints_every_step(a_known_variant, tmp_path, capsys):
    variant = a_known_variant
    ab_variant.main(["--variants", variant, "--bench", "decode", "--work", str(tmp_path / "w"), "--dry-run",
                     "--tests", "tests/test_gpu_decode.py"])
    out = capsys.readouterr().out
    assert out.count("git -C") == 2 and f"TFO_KERNEL_VARIANTS={variant}" in out
    assert "-m gpu tests/test_gpu_decode.py" in out and "ab_trees.py --tree default=" in out
    assert not (tmp_path / "w").exists()
