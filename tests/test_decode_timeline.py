"""The profiling build's launch timeline (setup.py's TFO_TIMELINE=1): the record layout the kernels
write and benchmarks/decode_timeline.py reads, the reader's summary on records of known times,
the knob's kernels and bindings compiling for NVIDIA and AMD without a GPU, production kernels
untouched by it, and (GPU tier, on a profiling build) the records of real launches."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_flashinfer_ops as flashinfer
from torch_flashinfer_ops import _C

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import decode_timeline as tl  # noqa: E402

try:
    from . import binding_compiles, tool_modules
except ImportError:
    import binding_compiles
    import tool_modules

KERNELS = {name: ROOT / "csrc" / "hip" / "kernels" / "decode" / f"{name}.cu" for name in ("decode_mma", "decode_simt")}
ONE_CONFIG = ["-DTFO_HEAD_DIM_128", "-DTFO_DTYPE_F16"]


cc = tool_modules.load("compile_check")  # its compilers, commands and flags


def _compiler(vendor):
    """compile_check's compiler for the vendor; skips (fails under TFO_REQUIRE_COMPILERS=1) without."""
    path = cc.find_compiler(vendor)
    if path is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail(f"{cc.INSTALL_HINTS[vendor]}; TFO_REQUIRE_COMPILERS=1 requires it")
        pytest.skip(cc.INSTALL_HINTS[vendor])
    return path


def test_the_reader_matches_the_record_header():
    consts, events = tl.header_layout()
    assert (consts["kBlock"], consts["kMultiprocessor"], consts["kStartNs"], consts["kEndNs"], consts["kCycles"]) == (
        tl.BLOCK, tl.MULTIPROCESSOR, tl.START_NS, tl.END_NS, tl.CYCLES)
    assert consts["kWords"] == tl.WORDS and consts["kEvents"] == len(tl.EVENTS)
    assert events == ["kTaskStart", "kWaitDone", "kFirstTile", "kTilesDone", "kCombined", "kFinished"]


def _record(block, start_ns, end_ns, cycles, sm=0):
    return [block, sm, start_ns, end_ns, *cycles]


def test_summary_of_known_records():
    # A 2 GHz clock: 2 cycles per ns. Blocks 0 and 1 start 1000 ns apart; block 0 runs a second
    # task; one row was never written (-1).
    records = [
        _record(0, 10_000, 14_000, [0, 2000, 4000, 6000, 7000, 8000]),
        _record(1, 11_000, 13_000, [100, 1100, 2100, 3100, 3600, 4100]),
        _record(0, 14_000, 16_000, [8000, 8400, 9000, 11000, 11600, 12000]),
        [-1] * tl.WORDS,
    ]
    s = tl.summarize(records)
    assert (s["tasks"], s["blocks"]) == (3, 2)
    assert s["clock_ghz"] == pytest.approx(2.0)  # (8000 + 4000 + 4000) cycles over 8000 ns
    assert s["spread_us"] == pytest.approx(1.0)
    assert s["span_us"] == pytest.approx(6.0) and s["end_max_us"] == pytest.approx(6.0)
    assert s["end_p50_us"] == pytest.approx(4.0)  # ends 4, 3, 6 us after the first start
    # wait: 1000, 500, 200 ns; tiles: 1000, 500, 1000 ns.
    assert s["wait_p50_us"] == pytest.approx(0.5) and s["wait_p90_us"] == pytest.approx(1.0)
    assert s["tiles_p50_us"] == pytest.approx(1.0)
    assert s["finished_p50_us"] == pytest.approx(0.25)


def test_a_task_without_a_first_tile_leaves_that_phase_out():
    records = [_record(0, 0, 1000, [0, 100, -1, 300, 400, 500]), _record(1, 0, 1000, [0, 100, 200, 300, 400, 2000])]
    s = tl.summarize(records)
    assert s["first_tile_p90_us"] == pytest.approx(0.1 / s["clock_ghz"])  # only the second task's


def _launch(ends_by_sm):
    """One task a block; {sm: [task end in us, ...]}: every task starts at 0 ns, block ids in turn."""
    records, block = [], 0
    for sm, ends in ends_by_sm.items():
        for end_us in ends:
            records.append(_record(block, 0, int(end_us * 1000), [0, 1, 2, 3, 4, 5], sm=sm))
            block += 1
    return records


def test_multiprocessor_summary_groups_ends_by_the_blocks_each_ran():
    # Three multiprocessors ran two blocks, one ran one: the common count is 2. A multiprocessor's
    # end is its last task's (sm 0: 5 us, not 4).
    now = _launch({0: [4.0, 5.0], 1: [6.0, 6.0], 2: [7.0, 3.0], 3: [2.0]}) + [[-1] * tl.WORDS]
    s = tl.multiprocessor_summary(now)
    assert s["sm_blocks"] == "3x2 1x1"
    assert s["sm_end_by_blocks"] == "1:2.0 2:6.0"
    assert s["sm_end_sd_us"] == pytest.approx((2 / 3) ** 0.5)  # ends 5, 6, 7 us
    assert s["sm_corr_calls"] != s["sm_corr_calls"]  # no launch before: nan


def test_multiprocessor_summary_correlates_the_same_multiprocessors_between_calls():
    now = _launch({0: [4.0, 5.0], 1: [6.0, 6.0], 2: [7.0, 3.0], 3: [2.0]})
    slow_again = _launch({0: [5.5, 1.0], 1: [1.0, 6.5], 2: [7.5, 1.0], 3: [9.0, 9.0]})  # sm 3 ran two: left out
    assert tl.multiprocessor_summary(now, slow_again)["sm_corr_calls"] == pytest.approx(1.0)
    reversed_order = _launch({0: [7.0, 1.0], 1: [6.0, 1.0], 2: [5.0, 1.0]})
    assert tl.multiprocessor_summary(now, reversed_order)["sm_corr_calls"] == pytest.approx(-1.0)
    two_in_common = _launch({0: [1.0, 1.0], 1: [2.0, 2.0]})
    corr = tl.multiprocessor_summary(now, two_in_common)["sm_corr_calls"]
    assert corr != corr  # fewer than three multiprocessors to correlate: nan


def test_paths_option():
    assert tl.parse_args(["--paths", "mma,simt"]).paths == ["mma", "simt"]
    with pytest.raises(SystemExit):
        tl.parse_args(["--paths", "tensor"])
    with pytest.raises(SystemExit):
        tl.parse_args(["--calls", "0"])


def test_no_records_is_an_error():
    with pytest.raises(ValueError, match="no task was recorded"):
        tl.summarize([[-1] * tl.WORDS])


@pytest.mark.skipif(_C.timeline_built(), reason="a build without the knob")
def test_a_build_without_the_knob_refuses_a_timeline():
    with pytest.raises(RuntimeError, match="no GPU kernels" if not _C.gpu_kernels_built() else "no timeline"):
        _C.set_decode_timeline(0, 0)


def _nvcc_ptx(kernel, defines):
    out = subprocess.run([_compiler("nvidia"), "-ptx", "-arch=sm_90a", *cc.COMMON_FLAGS, "-I", str(cc.INCLUDE_DIR),
                          *ONE_CONFIG, *defines, "-x", "cu", str(KERNELS[kernel]), "-o", "-"], capture_output=True,
                         text=True, timeout=cc.COMPILE_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("kernel", KERNELS)
def test_nvidia_timeline_kernels_read_the_clocks_and_production_ones_do_not(kernel):
    assert "%globaltimer" in _nvcc_ptx(kernel, ["-DTFO_TIMELINE"])
    production = _nvcc_ptx(kernel, [])
    assert "%globaltimer" not in production and "%clock64" not in production


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("arch", cc.AMD_ARCHS)
def test_amd_timeline_kernels_read_the_clocks(arch, kernel, tmp_path):
    asm = tmp_path / f"{kernel}.s"
    cmd = cc.amd_command(_compiler("amd"), KERNELS[kernel], arch, asm) + [*ONE_CONFIG, "-DTFO_TIMELINE"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=cc.COMPILE_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    text = asm.read_text()
    for instruction in ("s_memrealtime", "s_memtime", "s_getreg_b32"):
        assert instruction in text


def test_the_timeline_bindings_compile():
    if binding_compiles.bc.find_nvcc() is None:
        _compiler("nvidia")
    for source, (ok, errors) in binding_compiles.compiled()[2].items():
        assert ok, f"{source} does not compile with TFO_TIMELINE:\n{errors}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU")
@pytest.mark.skipif(not _C.timeline_built(), reason="needs a profiling build (TFO_TIMELINE=1)")
@pytest.mark.parametrize("use_tensor_cores", [True, False])
def test_launch_records_on_the_gpu(use_tensor_cores):
    # Batch 1 at kv 4k splits over many blocks; every task's record is whole and in order.
    from bench_decode import decode_call, decode_inputs

    workspace = torch.zeros(128 << 20, dtype=torch.uint8, device="cuda")
    call = decode_call(flashinfer, use_tensor_cores, decode_inputs(1, 4096, torch.float16), workspace)
    call()
    records = tl.record_calls(flashinfer, call, 2)[-1].tolist()
    written = [r for r in records if r[tl.START_NS] >= 0]
    assert len(written) >= 8  # at least one task per kv head
    assert all(r == [-1] * tl.WORDS for r in records[len(written):])  # tasks are numbered densely
    for r in written:
        assert r[tl.END_NS] >= r[tl.START_NS]
        cycles = r[tl.CYCLES:]
        assert all(b >= a for a, b in zip(cycles, cycles[1:])), r
    s = tl.summarize(records)
    assert 0.5 < s["clock_ghz"] < 3.5 and s["span_us"] > 0
