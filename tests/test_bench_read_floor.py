"""The read-floor benchmark on the host: its options (the cold-cache ones, and the timing line
and row timing they give, bench_decode.py's: declared and built there alone), its table (a row
without upstream), and its kernel, compiled with nvcc where present: the loads it times must
survive optimisation and it must wait for the launch before as the decode kernels do."""
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
bench_read_floor = pytest.importorskip("bench_read_floor")
bench_decode = pytest.importorskip("bench_decode")
stream_read = pytest.importorskip("stream_read")


def test_defaults_are_batch_1_at_the_bar_lengths_in_graphs_of_ten():
    args = bench_read_floor.parse_args([])
    assert args.batches == [1] and args.kv == [1024, 2048, 4096, 16384] and args.graph_calls == 10
    assert [str(d) for d in args.kv_dtypes] == ["torch.float16", "torch.float8_e4m3fn"]
    assert bench_read_floor.parse_args(["--quick"]).kv == [1024]
    assert not args.cold_caches and bench_read_floor.parse_args(["--cold-caches"]).cold_caches


def test_graph_calls_below_one_is_refused():
    with pytest.raises(SystemExit):
        bench_read_floor.parse_args(["--graph-calls", "0"])


def row(**over):
    r = dict(kv_dtype="float16", batch=1, kv_len=4096, caches=7, calls=10, cache_bytes=16_777_216, launch_us=1.1,
             read_floor_us=3.7,
             read_floor_grid="read 264x512", read_floor_pct_copy=152.0, ours_us=8.8, ours_path="ours-mma",
             ours_pct_copy=64.0, flashinfer_us=11.4, flashinfer_path="flashinfer-simt", ours_vs_flashinfer=11.4 / 8.8,
             us_for_1_5x=11.4 / 1.5)
    r.update(over)
    return r


def test_table_gives_the_time_over_the_floor_and_what_the_bar_asks():
    line = bench_read_floor.table([row()]).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["float16", "1", "4096", "16.8", "7 / 10"]
    assert cells[6] == "3.7 (read 264x512)" and cells[8] == "8.8 (ours-mma)"
    assert cells[-3:] == ["1.30", "7.6", "5.1"]


def test_table_row_without_upstream_shows_na():
    line = bench_read_floor.table([row(flashinfer_us=None, flashinfer_path=None, ours_vs_flashinfer=None,
                                       us_for_1_5x=None)]).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[-4:] == ["n/a (None)", "n/a", "n/a", "5.1"]


LAUNCH = r"""
void launch(const void* src, int64_t n, uint32_t* sink, cudaStream_t stream) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(132);
  config.blockDim = dim3(512);
  config.stream = stream;
  cudaLaunchKernelEx(&config, stream_read_kernel, static_cast<const uint4*>(src), n, sink);
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_kernel_waits_for_the_launch_before_and_keeps_its_loads(tmp_path):
    source = tmp_path / "stream_read.cu"
    source.write_text(stream_read.KERNEL_SOURCE + LAUNCH)
    ptx = tmp_path / "stream_read.ptx"
    subprocess.run(["nvcc", "-ptx", "-O3", "-std=c++17", "-arch=sm_90a", str(source), "-o", str(ptx)], check=True,
                   capture_output=True, timeout=300)
    text = ptx.read_text()
    body = text[text.index(".entry"):]
    assert "griddepcontrol.wait" in body and "griddepcontrol.launch_dependents" in body
    # The unrolled round's four 16-byte loads, and the single-load tail.
    assert body.count("ld.global.nc.v4") >= 5
    assert body.index("griddepcontrol.wait") < body.index("ld.global.nc.v4")


COLD_LINE = ("timing: 10 call(s) captured in one CUDA graph per sample, CUDA events, divided; the paths' samples "
             "interleaved; cold caches: each call reads the next of distinct caches (52 MB of L2: twice that between "
             "two reads of one), a sample at least one call per cache")


def test_both_scripts_declare_the_cold_cache_options_through_bench_decode(monkeypatch):
    """One declaration of --cold-caches and --max-cache-gb (argparse refuses a second one), each
    script passing its own default."""
    defaults, declare = [], bench_decode.add_cold_cache_options

    def spy(parser, max_cache_gb, **kw):
        defaults.append(max_cache_gb)
        declare(parser, max_cache_gb, **kw)
    monkeypatch.setattr(bench_read_floor, "add_cold_cache_options", spy)
    monkeypatch.setattr(bench_decode, "add_cold_cache_options", spy)
    floor, decode = bench_read_floor.parse_args([]), bench_decode.parse_args(["--out", "x"])
    assert defaults == [8.0, 40.0]
    assert (floor.cold_caches, floor.max_cache_gb, decode.cold_caches, decode.max_cache_gb) == (False, 8.0, False, 40.0)
    floor = bench_read_floor.parse_args(["--cold-caches", "--max-cache-gb", "2"])
    decode = bench_decode.parse_args(["--out", "x", "--cold-caches", "--max-cache-gb", "2"])
    assert (floor.cold_caches, floor.max_cache_gb, decode.cold_caches, decode.max_cache_gb) == (True, 2.0, True, 2.0)


def test_cold_cache_timing_gives_both_scripts_their_line_and_row_timing(monkeypatch):
    monkeypatch.setattr(bench_decode, "l2_cache_bytes", lambda: 50 << 20)
    args = bench_read_floor.parse_args(["--cold-caches", "--max-cache-gb", "2.5"])
    line, rows = bench_decode.cold_cache_timing(args, "graph", 10)
    assert line == COLD_LINE
    assert (rows.method, rows.calls, rows.cold, rows.l2_bytes, rows.budget_bytes) == ("graph", 10, True, 50 << 20,
                                                                                       2_500_000_000)
    args = bench_decode.parse_args(["--out", "x", "--cold-caches", "--graph-calls", "10"])
    assert bench_decode.cold_cache_timing(args, "graph", 10, " (the rows' calls)")[0] == COLD_LINE + " (the rows' calls)"

    def no_gpu():
        raise AssertionError("the L2 is read only with --cold-caches")
    monkeypatch.setattr(bench_decode, "l2_cache_bytes", no_gpu)
    line, rows = bench_decode.cold_cache_timing(bench_read_floor.parse_args([]), "events", 10)
    assert line == "timing: 10 back-to-back calls per sample, CUDA events, divided; the paths' samples interleaved"
    assert (rows.cold, rows.l2_bytes, rows.budget_bytes) == (False, 0, 8_000_000_000)

