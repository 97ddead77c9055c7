"""The read-floor benchmark on the host: its options, its table (a row without upstream), and
its kernel, compiled with nvcc where present: the loads it times must survive optimisation and
it must wait for the launch before as the decode kernels do."""
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
bench_read_floor = pytest.importorskip("bench_read_floor")
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
