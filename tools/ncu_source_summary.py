#!/usr/bin/env python3
"""Summarise Nsight Compute's source page (SASS with per-instruction stall samples) by region.

Make the input on the GPU machine from a report:
    ncu --set full --clock-control none -k regex:"prefill_kernel|SinglePrefill" -o prof python3 run.py
    ncu -i prof.ncu-rep --page source --csv --print-source sass > source.csv
then, anywhere (pure Python, no ncu needed):
    python tools/ncu_source_summary.py source.csv [--kernel REGEX] [--ops 20] [--chunk 40]

For each profiled kernel (consecutive duplicate listings of the same kernel are shown once):
    the stall samples by reason;
    the samples and executed warp instructions before, inside and after the kernel's main loop
        (the longest backward branch whose body holds at least --min-mma matrix instructions:
        HMMA/HGMMA/IMMA), so that a per-tile cost can be told from a per-block one;
    the opcodes with the most samples (executed per warp, samples, the top reasons);
    with --chunk N, the loop as consecutive chunks of N executed instructions with their mix of
        matrix (T), softmax-like float (S) and other (O) instructions and their samples, which
        shows where in a tile the time goes (the wait at the top, S, the softmax, P.V).
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import re
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
MATRIX_OPS = ("HMMA", "HGMMA", "IMMA", "DMMA")
FLOAT_OPS = ("MUFU", "FMNMX", "FADD", "F2FP", "FMUL", "FFMA", "SHFL", "FSEL", "FSETP", "VOTE")
BRANCH_TARGET = re.compile(r"\b0x([0-9a-fA-F]+)\b")


@dataclasses.dataclass
class Instruction:
    address: int  # relative to the kernel's first instruction
    text: str
    executed: float
    samples: float
    stalls: dict[str, float]

    @property
    def opcode(self) -> str:
        body = re.sub(r"^@!?U?P\w+\s+", "", self.text.strip())
        return body.split(" ")[0].split(".")[0]


@dataclasses.dataclass
class Kernel:
    name: str
    instructions: list[Instruction]
    absolute_base: int  # the listing's first address; branch targets are absolute


def _number(cell: str) -> float:
    cell = (cell or "").replace(",", "").strip()
    try:
        return float(cell)
    except ValueError:
        return 0.0


def parse(lines) -> list[Kernel]:
    """Kernels of an `ncu --page source --csv --print-source sass` listing, in order."""
    kernels: list[Kernel] = []
    header: dict[str, int] | None = None
    name = None
    rows: list[list[str]] = []

    def finish():
        if name is None or header is None or not rows:
            return
        base = int(rows[0][0], 16)
        stall_cols = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
        instructions = [
            Instruction(int(r[0], 16) - base, r[header["Source"]], _number(r[header[EXECUTED]]),
                        _number(r[header[SAMPLES]]), {c[len("stall_"):]: _number(r[header[c]]) for c in stall_cols})
            for r in rows
        ]
        kernels.append(Kernel(name, instructions, base))

    for r in csv.reader(lines):
        if not r:
            continue
        if r[0] == "Kernel Name":
            finish()
            name, header, rows = r[1], None, []
        elif r[0] == "Address":
            header = {c: i for i, c in enumerate(r)}
            missing = [c for c in ("Source", SAMPLES, EXECUTED) if c not in header]
            if missing:
                raise ValueError(f"source page without the columns {missing}: was it made with --set full?")
        elif header is not None and r[0].lower().startswith("0x"):
            rows.append(r)
    finish()
    # ncu may list a kernel's source twice in a row; keep one.
    unique: list[Kernel] = []
    for k in kernels:
        if unique and unique[-1].name == k.name and [(i.address, i.text, i.samples) for i in unique[-1].instructions] == [
                (i.address, i.text, i.samples) for i in k.instructions]:
            continue
        unique.append(k)
    return unique


def main_loop(kernel: Kernel, min_mma: int = 16) -> tuple[int, int] | None:
    """(first, last) relative address of the longest backward branch's body with >= min_mma matrix ops."""
    best = None
    for n, ins in enumerate(kernel.instructions):
        if ins.opcode not in ("BRA", "JMP"):
            continue
        m = BRANCH_TARGET.search(ins.text)
        if not m:
            continue
        target = int(m.group(1), 16) - kernel.absolute_base
        if not 0 <= target < ins.address:
            continue
        body = [i for i in kernel.instructions[:n + 1] if i.address >= target]
        if sum(i.opcode in MATRIX_OPS for i in body) < min_mma:
            continue
        if best is None or ins.address - target > best[1] - best[0]:
            best = (target, ins.address)
    return best


def op_class(opcode: str) -> str:
    if opcode in MATRIX_OPS or opcode.startswith("LDSM"):
        return "T"
    return "S" if opcode in FLOAT_OPS else "O"


def regions(kernel: Kernel, loop: tuple[int, int] | None) -> dict[str, tuple[float, float]]:
    """Samples and executed warp instructions before, inside and after the loop."""
    out = {"before": [0.0, 0.0], "loop": [0.0, 0.0], "after": [0.0, 0.0]}
    for i in kernel.instructions:
        if loop is None or i.address < loop[0]:
            key = "before"
        elif i.address <= loop[1]:
            key = "loop"
        else:
            key = "after"
        out[key][0] += i.samples
        out[key][1] += i.executed
    return {k: (v[0], v[1]) for k, v in out.items()}


def by_opcode(kernel: Kernel) -> list[tuple[str, float, float, dict[str, float]]]:
    """(opcode, executed, samples, stalls) sorted by samples."""
    agg: dict[str, list] = collections.defaultdict(lambda: [0.0, 0.0, collections.Counter()])
    for i in kernel.instructions:
        a = agg[i.opcode]
        a[0] += i.executed
        a[1] += i.samples
        a[2].update(i.stalls)
    return sorted(((op, a[0], a[1], dict(a[2])) for op, a in agg.items()), key=lambda x: -x[2])


def chunks(kernel: Kernel, loop: tuple[int, int], size: int) -> list[tuple[int, collections.Counter, float]]:
    """The loop's executed instructions in chunks of `size`: (first address, class mix, samples)."""
    body = [i for i in kernel.instructions if loop[0] <= i.address <= loop[1] and i.executed > 0]
    out = []
    for k in range(0, len(body), size):
        part = body[k:k + size]
        out.append((part[0].address, collections.Counter(op_class(i.opcode) for i in part), sum(i.samples for i in part)))
    return out


def warps(kernel: Kernel) -> float:
    """Warps that ran the kernel: the executions of its first instruction."""
    return kernel.instructions[0].executed if kernel.instructions else 0.0


def report(kernel: Kernel, ops: int, chunk: int, min_mma: int) -> str:
    lines = [kernel.name]
    stalls = collections.Counter()
    for i in kernel.instructions:
        stalls.update(i.stalls)
    total = sum(i.samples for i in kernel.instructions)
    lines.append(f"  samples {total:.0f}; by reason: " +
                 ", ".join(f"{k} {v:.0f}" for k, v in stalls.most_common() if v >= max(1.0, 0.005 * total)))
    loop = main_loop(kernel, min_mma)
    if loop is None:
        lines.append(f"  no loop with {min_mma}+ matrix instructions")
    else:
        lines.append(f"  main loop {loop[0]:#x}-{loop[1]:#x}")
    n = warps(kernel) or 1.0
    for key, (samples, executed) in regions(kernel, loop).items():
        lines.append(f"  {key:6s} samples {samples:8.0f}  instructions per warp {executed / n:9.0f}")
    lines.append("  opcode    per warp   samples  top reasons")
    for op, executed, samples, st in by_opcode(kernel)[:ops]:
        top = sorted(st.items(), key=lambda x: -x[1])[:3]
        lines.append(f"  {op:8s} {executed / n:9.0f} {samples:9.0f}  " + ", ".join(f"{k} {v:.0f}" for k, v in top if v > 0))
    if chunk and loop is not None:
        lines.append(f"  loop in chunks of {chunk} executed instructions (T matrix/ldmatrix, S float, O other):")
        for address, mix, samples in chunks(kernel, loop, chunk):
            lines.append(f"    {address:#7x} T{mix['T']:3d} S{mix['S']:3d} O{mix['O']:3d}  samples {samples:6.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="ncu -i REPORT --page source --csv --print-source sass > this file")
    ap.add_argument("--kernel", default=None, help="only kernels whose name matches this regular expression")
    ap.add_argument("--ops", type=int, default=20, help="opcodes listed per kernel (default 20)")
    ap.add_argument("--chunk", type=int, default=0, help="list the loop in chunks of N executed instructions")
    ap.add_argument("--min-mma", type=int, default=16, help="matrix instructions that make a loop the main one")
    args = ap.parse_args(argv)
    with open(args.csv, newline="") as f:
        kernels = parse(f)
    if args.kernel:
        kernels = [k for k in kernels if re.search(args.kernel, k.name)]
    if not kernels:
        print("no kernels in the listing" + (f" matching {args.kernel!r}" if args.kernel else ""), file=sys.stderr)
        return 1
    for n, k in enumerate(kernels):
        print(f"#{n} " + report(k, args.ops, args.chunk, args.min_mma))
    return 0


if __name__ == "__main__":
    sys.exit(main())
