"""benchmarks/bars.py: the performance bars read from bench_decode.py / bench_prefill.py results
(rows in their JSON layout, made up here), met or not, with the rows that miss. Host only."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bars  # noqa: E402


def _decode_row(kv_dtype, batch, kv_len, best, pct_mma, pct_simt=50.0, section="equal"):
    return {"section": section, "kv_dtype": kv_dtype, "batch": batch, "kv_len": kv_len,
            "ours_vs_flashinfer": {"best": best, "simt": None, "mma": best},
            "pct_copy": {"ours-simt": pct_simt, "ours-mma": pct_mma, "flashinfer-simt": 99.0, "flashinfer-mma": 99.0}}


def test_decode_bars():
    rows = [
        _decode_row("float16", 1, 4096, 1.19, 38.0),
        _decode_row("float16", 16, 16384, 0.99, 100.0),
        _decode_row("float16", 64, 1024, 1.04, 90.0),
        _decode_row("float16", 64, 4096, 1.02, 104.0),
        _decode_row("float8_e4m3fn", 1, 4096, 1.55, 20.0),
        _decode_row("float8_e4m3fn", 64, 1024, 1.25, 64.0, pct_simt=30.0),
        _decode_row("float16", 128, 1024, 0.5, 10.0, section="uneven"),  # not one of the bars' shapes
    ]
    upstream, copy16, copy8, batch1 = bars.decode_bars(rows)
    assert upstream.met is False and list(upstream.measured) == [
        "float16 bs1 kv4096", "float16 bs16 kv16384", "float16 bs64 kv1024", "float16 bs64 kv4096",
        "float8_e4m3fn bs1 kv4096", "float8_e4m3fn bs64 kv1024"]
    assert "1 of 6 below 1: float16 bs16 kv16384 0.99" in upstream.line()
    assert copy16.met is False and copy16.measured == {"float16 bs64 kv1024": 0.90, "float16 bs64 kv4096": 1.04}
    assert copy8.met is False and copy8.measured == {"float8_e4m3fn bs64 kv1024": 0.64}  # the better path
    assert batch1.met is False and "float16 bs1 kv4096 1.19" in batch1.line()
    assert bars.decode_bars([_decode_row("float16", 1, 4096, 1.6, 50.0)])[-1].met is True


def test_a_bar_without_its_peer_is_not_measured():
    bar = bars.decode_bars([_decode_row("float16", 1, 4096, None, 40.0)])[0]
    assert bar.met is None and "not measured (1 rows, none with its peer)" in bar.line()


def _single(dtype, causal, L, vs_fa2, head_dim=128):
    return {"section": "single", "kind": "single", "dtype": dtype, "head_dim": head_dim, "causal": causal, "L": L,
            "batch": 1, "ours_vs": {"sdpa-flash": 2.0, "flashinfer-fa2": vs_fa2}}


def _batch(dtype, causal, kind, n, L, vs_single, head_dim=128, vs_single_row=None):
    """A batch row; with vs_single_row, as bench_prefill writes them now (the single timed in
    turn with the row, and the single section's row), else as it wrote them before."""
    row = {"section": "batch", "kind": kind, "dtype": dtype, "head_dim": head_dim, "causal": causal, "batch": n,
           "L": L, "ours_vs": {"flashinfer-fa2": 1.0}, "batch_vs_single": vs_single}
    if vs_single_row is not None:
        row.update(single_tflops=300.0, batch_vs_single_row=vs_single_row)
    return row


def test_prefill_bars():
    rows = [
        _single("float16", False, 1024, 0.97), _single("float16", True, 4096, 1.02),
        _single("bfloat16", True, 16384, 1.05), _single("float16", False, 1024, 0.5, head_dim=64),
        _batch("float16", True, "paged", 4, 4096, 0.88), _batch("float16", True, "ragged", 4, 4096, 0.95),
        _batch("float16", False, "paged", 16, 1024, 0.93, head_dim=256),
    ]
    single, batch, batch_row = bars.prefill_bars(rows)
    assert single.met is False and len(single.measured) == 3  # head_dim 128 rows only
    assert "float16 non-causal L1024 0.97" in single.line()
    # Rows from before the in-turn single: their ratio is the section row's; the in-turn bar has none.
    assert batch.met is None and batch_row.met is False
    assert batch_row.measured == {"float16 causal paged 4x4096": 0.88, "float16 causal ragged 4x4096": 0.95}


def test_prefill_batch_bar_reads_the_in_turn_single_and_the_section_row_apart():
    rows = [_batch("float16", False, "paged", 16, 1024, 0.93, vs_single_row=0.89),
            _batch("float16", False, "ragged", 16, 1024, 0.95, vs_single_row=0.91)]
    _, batch, batch_row = bars.prefill_bars(rows)
    assert batch.met is True and batch.measured == {"float16 non-causal paged 16x1024": 0.93,
                                                    "float16 non-causal ragged 16x1024": 0.95}
    assert batch_row.met is False and "float16 non-causal paged 16x1024 0.89" in batch_row.line()


def test_the_command_reads_result_files(tmp_path, capsys):
    decode = tmp_path / "decode.json"
    decode.write_text(json.dumps({"meta": {}, "rows": [_decode_row("float16", 64, 4096, 1.02, 104.0)]}))
    bars.main(["--decode", str(decode)])
    out = capsys.readouterr().out
    assert "- decode: ours >= upstream FlashInfer at every shape: met; worst float16 bs64 kv4096 1.02" in out
    assert "batch 1, kv 4k: not measured (no such rows in this run)" in out


def test_a_partial_run_is_read_and_said_to_be_partial(tmp_path, capsys):
    bench_report = pytest.importorskip("bench_report")
    rows = [_decode_row("float16", 64, 4096, 1.02, 104.0)]
    bench_report.write_partial(str(tmp_path), "decode", {"device": "x"}, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decode.json"]  # no temporary left
    bars.main(["--decode", str(tmp_path / "decode.json")])
    out = capsys.readouterr().out
    assert "a partial run (1 rows, stopped before its end)" in out
    assert "met; worst float16 bs64 kv4096 1.02" in out
    bench_report.write_results(str(tmp_path), "decode", {"device": "x"}, rows + rows, "text")
    bars.main(["--decode", str(tmp_path / "decode.json")])
    assert "a partial run" not in capsys.readouterr().out  # the finished run's file replaces it
