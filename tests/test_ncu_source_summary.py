"""tools/ncu_source_summary.py on a made-up source-page listing (the shape ncu writes)."""

import io

import pytest

try:
    from . import tool_modules
except ImportError:
    import tool_modules

nss = tool_modules.load("ncu_source_summary")

HEADER = ('"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)",'
          '"Instructions Executed","stall_barrier","stall_long_sb","stall_wait","stall_wait (Not Issued)"')


def listing(name, base, body):
    """body: (text, samples, executed, barrier, long_sb, wait) per instruction, 16 bytes apart."""
    rows = [f'"Kernel Name","{name}",', HEADER]
    for n, (text, samples, executed, barrier, long_sb, wait) in enumerate(body):
        rows.append(f'"{base + 16 * n:#x}","{text}","{samples}","0","{executed}","{barrier}","{long_sb}","{wait}","7"')
    return "\n".join(rows) + "\n"


BASE = 0x7F0000001000
# Two warps; 0x00-0x10 prologue, loop 0x20-0x70 (four HMMA) back to 0x20, 0x80 epilogue.
BODY = [
    ("S2R R0, SR_TID.X", 1, 2, 0, 0, 1),
    ("LDGSTS.E.BYPASS.LTC128B.128 [R1], desc[UR4][R2.64]", 2, 2, 0, 2, 0),
    ("DEPBAR.LE SB0, 0x0", 0, 8, 0, 0, 0),
    ("BAR.SYNC.DEFER_BLOCKING 0x0", 9, 8, 9, 0, 0),
    ("HMMA.16816.F32.BF16 R4, R8, R12, R4", 3, 8, 0, 0, 3),
    ("HMMA.16816.F32.BF16 R4, R8, R12, R4", 3, 8, 0, 0, 3),
    ("MUFU.EX2 R5, R5", 4, 8, 0, 0, 2),
    (f"@P0 BRA {BASE + 0x20:#x}", 1, 8, 0, 0, 0),
    ("STG.E.128 desc[UR4][R2.64], R4", 5, 2, 0, 0, 0),
]


def test_loop_regions_opcodes_and_chunks():
    kernels = nss.parse(io.StringIO(listing("k<1>", BASE, BODY)))
    assert len(kernels) == 1
    k = kernels[0]
    assert [i.opcode for i in k.instructions][:4] == ["S2R", "LDGSTS", "DEPBAR", "BAR"]
    assert k.instructions[7].opcode == "BRA"  # the predicate is not the opcode
    # only two matrix instructions: no main loop at the default threshold, one at 2
    assert nss.main_loop(k) is None
    loop = nss.main_loop(k, min_mma=2)
    assert loop == (0x20, 0x70)
    r = nss.regions(k, loop)
    assert r["before"] == (3.0, 4.0) and r["loop"] == (20.0, 48.0) and r["after"] == (5.0, 2.0)
    assert nss.warps(k) == 2
    ops = {op: (ex, s, st) for op, ex, s, st in nss.by_opcode(k)}
    assert ops["HMMA"][:2] == (16.0, 6.0) and ops["HMMA"][2]["wait"] == 6.0
    assert ops["BAR"][2]["barrier"] == 9.0
    assert "wait (Not Issued)" not in ops["HMMA"][2]  # only the all-samples reasons
    parts = nss.chunks(k, loop, 3)
    assert [p[0] for p in parts] == [0x20, 0x50]
    assert parts[0][1] == {"O": 2, "T": 1} and parts[0][2] == 12.0
    assert parts[1][1] == {"T": 1, "S": 1, "O": 1} and parts[1][2] == 8.0


def test_duplicate_listings_are_shown_once_and_other_kernels_kept():
    text = listing("k<1>", BASE, BODY) + listing("k<1>", BASE, BODY) + listing("other", BASE + 0x10000, BODY[:2])
    kernels = nss.parse(io.StringIO(text))
    assert [k.name for k in kernels] == ["k<1>", "other"]
    # the same kernel launched again with other samples is a second launch, not a duplicate
    changed = [(t, s + 1, e, b, l, w) for t, s, e, b, l, w in BODY]
    assert len(nss.parse(io.StringIO(listing("k<1>", BASE, BODY) + listing("k<1>", BASE, changed)))) == 2


def test_listing_without_sampling_columns_is_refused():
    text = '"Kernel Name","k",\n"Address","Source","Instructions Executed"\n"0x10","NOP","1"\n'
    with pytest.raises(ValueError, match="--set full"):
        nss.parse(io.StringIO(text))


def test_cli(tmp_path, capsys):
    path = tmp_path / "source.csv"
    path.write_text(listing("k<1>", BASE, BODY))
    assert nss.main([str(path), "--min-mma", "2", "--chunk", "3"]) == 0
    out = capsys.readouterr().out
    assert "main loop 0x20-0x70" in out and "loop   samples       20" in out and "T  1 S  1 O  1" in out
    assert nss.main([str(path), "--kernel", "nothing"]) == 1
