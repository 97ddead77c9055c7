#!/usr/bin/env python3
"""Compile every GPU kernel source for both vendors, without a GPU, and check the result.

AMD (gfx942, gfx950), with Debian's clang-22, device code only, to assembly:
    the ISA contains v_mfma (for sources that use matrix cores), no kernel uses scratch or a
    dynamic stack, no kernel spills registers (but the kernels a source names, which may spill
    SGPRs into VGPR lanes, still without scratch); VGPR/AGPR/SGPR counts and occupancy are
    reported.
NVIDIA (sm_80, sm_90a), with nvcc, to a cubin with ptxas resource usage:
    no kernel spills or has a stack frame (but the kernels a source names, which may spill up to
    the source's limit, measured faster so); register counts are reported.

Usage: python tools/compile_check.py [--vendor amd|nvidia] [--out-dir DIR] [--require-compilers]
A missing compiler skips its vendor, unless --require-compilers or TFO_REQUIRE_COMPILERS=1.
Exit status 0 when every compiled target passes. Pure Python; needs no torch.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INCLUDE_DIR = REPO_ROOT / "csrc" / "hip"


@dataclasses.dataclass(frozen=True)
class KernelSource:
    path: str  # relative to the repository root
    uses_matrix_cores: bool = True  # the AMD ISA must then contain v_mfma
    # AMD kernels (a regular expression on the mangled name) allowed to spill SGPRs into VGPR
    # lanes: v_writelane/v_readlane, no memory; scratch stays forbidden.
    sgpr_spills_allowed: str | None = None
    # NVIDIA kernels (a regular expression on the mangled name) allowed to spill, up to
    # nvidia_spill_limit bytes of spill stores + loads and of stack frame each; among them, those
    # that nvidia_spill_limit_raised names (regular expression, limit) up to its own limit.
    nvidia_spills_allowed: str | None = None
    nvidia_spill_limit: int = 0
    nvidia_spill_limit_raised: tuple[str, int] | None = None


# Every kernel source that must compile for both vendors. New kernel files are added here.
SOURCES = [
    KernelSource("csrc/hip/kernels/tile_gemm_probe.cu"),
    # AMD's planned prefill kernels for batches with custom masks (the fourth bool template
    # argument, kMasked, true; kSplitKv and kFewTiles after it): the mask's state exceeds the
    # scalar registers the common kernels leave.
    # NVIDIA's head_dim 128 kernels without a score transform or custom-mask instantiation:
    # single-request (not paged; split or not, either epilogue) and planned (paged or not), whose
    # tile loop, with every S k step unrolled, sits at the edge of 255 registers: a few loop values
    # spill (up to a 32-byte frame and 68 bytes of traffic: the fp16 single-request kernel, which
    # also issues the next tile's copies after the softmax, 1-4% faster so), and the unrolled
    # loop still runs faster than the spill-free rolled one (fp16's single-request kernels also
    # sum P's rows on the tensor cores; docs/kernel_notes.md). NVIDIA's head_dim 256 kernels
    # (64-row K/V tiles, one buffer each: prefill_policy.h) spill a few values too: up to a
    # 24-byte frame and 40 bytes of traffic, but the planned paged ones, whose rows' cache
    # offsets for a tile's copy (16 per thread, read from shared memory) push sm_80 to 56 bytes
    # and one reload per tile. The paged planned head_dim 128 kernels alone may take 80 bytes: on
    # sm_80 (compiled only) their page-table lookups by whole warps, 1.4-3.3% faster on sm_90a
    # where they spill 20, spill that much.
    KernelSource("csrc/hip/kernels/prefill/prefill_kernels.cu",
                 sgpr_spills_allowed=r"^_ZN3tfo7kernels7prefill14prefill_kernelI.*(?:Lb[01]E){3}Lb1E(?:Lb[01]E){2}EEv",
                 nvidia_spills_allowed=(r"^_ZN3tfo7kernels7prefill14prefill_kernelI(?:6__half|13__nv_bfloat16)"
                                        r"(?:Li128E(?:(?:Lb0E){4}Lb[01]ELb[01]E|Lb[01]ELb1E(?:Lb0E){4})"
                                        r"|Li256E(?:Lb[01]E){3}Lb0ELb[01]ELb0E)EEv"),
                 nvidia_spill_limit=68,
                 nvidia_spill_limit_raised=(r"^_ZN3tfo7kernels7prefill14prefill_kernelI(?:6__half|13__nv_bfloat16)"
                                            r"Li128ELb1ELb1E(?:Lb0E){4}EEv", 80)),
    KernelSource("csrc/hip/kernels/decode/decode_simt.cu", uses_matrix_cores=False),
    # NVIDIA's tensor-core decode with the query heads as columns on e4m3 caches at head_dim 128,
    # capped at 128 registers for four blocks a multiprocessor: its loop for the OCP encoding's
    # hardware widening spills on sm_90a (20 bytes stored, 24 loaded, a 24-byte frame), and that
    # kernel at four blocks measured faster than the spill-free row form at three (H100, e4m3
    # batch 64-128 kv 1k-2k 0.953-0.978 of the time; docs/kernel_notes.md).
    KernelSource("csrc/hip/kernels/decode/decode_mma.cu",
                 nvidia_spills_allowed=(r"^_ZN3tfo7kernels30decode_mma_head_columns_kernelI(?:6__half|13__nv_bfloat16)"
                                        r"NS0_7Fp8E4M3ELi128EEEv"),
                 nvidia_spill_limit=44),
    KernelSource("csrc/hip/kernels/cascade/merge_state.cu", uses_matrix_cores=False),
    KernelSource("csrc/hip/kernels/page/paged_kv.cu", uses_matrix_cores=False),
]

AMD_ARCHS = ("gfx942", "gfx950")
NVIDIA_ARCHS = ("sm_80", "sm_90a")
VENDORS = ("amd", "nvidia")
COMMON_FLAGS = ["-O3", "-std=c++17"]
COMPILE_TIMEOUT_S = 300

CLANG_NAME = "clang++-22"
NVCC_NAME = "nvcc"
INSTALL_HINTS = {
    "amd": f"{CLANG_NAME} not found: apt-get install clang-22 libamdhip64-dev rocm-device-libs "
    "(or set TFO_CLANG)",
    "nvidia": f"{NVCC_NAME} not found on PATH or in /usr/local/cuda/bin (or set TFO_NVCC)",
}


def find_compiler(vendor: str) -> str | None:
    """Path of the vendor's compiler, or None."""
    if vendor == "amd":
        return shutil.which(os.environ.get("TFO_CLANG") or CLANG_NAME)
    if vendor == "nvidia":
        if os.environ.get("TFO_NVCC"):
            return shutil.which(os.environ["TFO_NVCC"])
        return shutil.which(NVCC_NAME) or shutil.which("/usr/local/cuda/bin/nvcc")
    raise ValueError(f"vendor must be one of {VENDORS}, got {vendor!r}")


def amd_command(clang: str, source: Path, arch: str, output: Path) -> list[str]:
    return [
        clang, "-x", "hip", f"--offload-arch={arch}", "--cuda-device-only", "-nogpulib",
        *COMMON_FLAGS, "-D__AMDGCN_WAVEFRONT_SIZE=64", "-I", str(INCLUDE_DIR),
        "-S", str(source), "-o", str(output),
    ]  # fmt: skip


def nvidia_command(nvcc: str, source: Path, arch: str, output: Path) -> list[str]:
    return [
        nvcc, "-cubin", f"-arch={arch}", "--resource-usage", *COMMON_FLAGS,
        "-I", str(INCLUDE_DIR), "-x", "cu", str(source), "-o", str(output),
    ]  # fmt: skip


@dataclasses.dataclass
class KernelResources:
    name: str  # mangled
    registers: int  # VGPRs (AMD) or registers per thread (NVIDIA)
    sgprs: int | None = None
    agprs: int | None = None
    occupancy: int | None = None  # AMD: waves per SIMD
    scratch_bytes: int = 0  # AMD private segment; NVIDIA stack frame
    spill_bytes: int = 0  # AMD: VGPR+SGPR spill count; NVIDIA: spill stores + loads
    sgpr_spills: int = 0  # AMD: the SGPRs among them (spilled into VGPR lanes)
    mfma: dict[str, int] = dataclasses.field(default_factory=dict)  # AMD mnemonic -> count


@dataclasses.dataclass
class TargetResult:
    source: str
    vendor: str
    arch: str
    command: list[str]
    output: Path
    ok: bool = False
    kernels: list[KernelResources] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    log: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{self.vendor} {self.arch} {self.source}: {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  problem: {p}" for p in self.problems]
        if not self.ok and self.log:
            lines.append("  compiler output (tail):")
            lines += ["    " + line for line in self.log.strip().splitlines()[-30:]]
        lines.append("  command: " + " ".join(self.command))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# AMD: the assembly's amdhsa metadata and each kernel's body.

_METADATA_RE = re.compile(r"^\s*\.amdgpu_metadata\s*$(.*?)^\s*\.end_amdgpu_metadata", re.M | re.S)
_KERNEL_ITEM_RE = re.compile(r"^  - ", re.M)  # an entry of amdhsa.kernels (args nest deeper)
_KERNEL_KEY_RE = re.compile(r"^(?:  - |    )\.([\w]+):\s+(\S+)\s*$", re.M)
_MFMA_RE = re.compile(r"^\s+(v_mfma_\w+)", re.M)
_OCCUPANCY_RE = re.compile(r"^; Occupancy: (\d+)", re.M)


def parse_amd_asm(text: str) -> list[KernelResources]:
    match = _METADATA_RE.search(text)
    if not match:
        return []
    kernels_yaml = match.group(1).split("amdhsa.kernels:", 1)[-1]
    kernels_yaml = re.split(r"^\S", kernels_yaml, maxsplit=1, flags=re.M)[0]  # up to the next key
    items = _KERNEL_ITEM_RE.split(kernels_yaml)[1:]
    kernels = []
    for item in items:
        keys = dict(_KERNEL_KEY_RE.findall("  - " + item))
        name = keys.get("name", "?")
        kernel = KernelResources(
            name=name,
            registers=int(keys.get("vgpr_count", -1)),
            sgprs=int(keys.get("sgpr_count", -1)),
            agprs=int(keys.get("agpr_count", 0)),
            scratch_bytes=int(keys.get("private_segment_fixed_size", -1)),
            spill_bytes=int(keys.get("vgpr_spill_count", 0)) + int(keys.get("sgpr_spill_count", 0)),
            sgpr_spills=int(keys.get("sgpr_spill_count", 0)),
        )
        if keys.get("uses_dynamic_stack") == "true":
            kernel.scratch_bytes = max(kernel.scratch_bytes, 1)
        label = re.search(rf"^{re.escape(name)}:", text, re.M)
        if label:
            body_start = label.start()
            body_end = text.find("\n.Lfunc_end", body_start)
            kernel.mfma = dict(collections.Counter(_MFMA_RE.findall(text[body_start:body_end])))
            occupancy = _OCCUPANCY_RE.search(text, body_end)
            kernel.occupancy = int(occupancy.group(1)) if occupancy else None
        kernels.append(kernel)
    return kernels


def evaluate_amd(text: str, uses_matrix_cores: bool,
                 sgpr_spills_allowed: str | None = None) -> tuple[list[KernelResources], list[str]]:
    kernels = parse_amd_asm(text)
    problems = []
    if not kernels:
        problems.append("no kernels in the amdhsa metadata (are the templates instantiated?)")
    if uses_matrix_cores and "v_mfma" not in text:
        problems.append("no v_mfma instruction in the ISA")
    for k in kernels:
        if k.scratch_bytes != 0:
            problems.append(f"{k.name}: uses scratch ({k.scratch_bytes} bytes or a dynamic stack)")
        lane_spills_ok = sgpr_spills_allowed is not None and re.search(sgpr_spills_allowed, k.name)
        if k.spill_bytes != 0 and not (lane_spills_ok and k.spill_bytes == k.sgpr_spills):
            problems.append(f"{k.name}: spills {k.spill_bytes} registers")
    return kernels, problems


# ---------------------------------------------------------------------------------------------
# NVIDIA: ptxas info lines.

_PTXAS_FUNCTION_RE = re.compile(r"ptxas info\s*: Function properties for (\S+)")
_PTXAS_FRAME_RE = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_USED_RE = re.compile(r"ptxas info\s*: Used (\d+) registers")


def parse_ptxas(text: str) -> list[KernelResources]:
    kernels: list[KernelResources] = []
    current: KernelResources | None = None
    for line in text.splitlines():
        if m := _PTXAS_FUNCTION_RE.search(line):
            current = KernelResources(name=m.group(1), registers=-1)
            kernels.append(current)
        elif current is not None and (m := _PTXAS_FRAME_RE.search(line)):
            current.scratch_bytes = int(m.group(1))
            current.spill_bytes = int(m.group(2)) + int(m.group(3))
        elif current is not None and (m := _PTXAS_USED_RE.search(line)):
            current.registers = int(m.group(1))
    return kernels


def evaluate_nvidia(text: str, spills_allowed: str | None = None, spill_limit: int = 0,
                    spill_limit_raised: tuple[str, int] | None = None) -> tuple[list[KernelResources], list[str]]:
    kernels = parse_ptxas(text)
    problems = []
    if not kernels:
        problems.append("no kernels in the ptxas output (are the templates instantiated?)")
    for k in kernels:
        limit = spill_limit if spills_allowed is not None and re.search(spills_allowed, k.name) else 0
        if limit and spill_limit_raised is not None and re.search(spill_limit_raised[0], k.name):
            limit = spill_limit_raised[1]
        if k.spill_bytes > limit:
            problems.append(f"{k.name}: {k.spill_bytes} bytes of spill stores + loads (limit {limit})")
        if k.scratch_bytes > limit:
            problems.append(f"{k.name}: {k.scratch_bytes} bytes stack frame (local memory, limit {limit})")
        if k.registers < 0:
            problems.append(f"{k.name}: no register count in the ptxas output")
    return kernels, problems


# ---------------------------------------------------------------------------------------------


def _compile(result: TargetResult, source: KernelSource) -> TargetResult:
    start = time.monotonic()
    try:
        proc = subprocess.run(
            result.command, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=COMPILE_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        result.problems.append(f"compiler timed out after {COMPILE_TIMEOUT_S} s")
        return result
    except OSError as error:
        result.problems.append(f"could not run the compiler: {error}")
        return result
    finally:
        result.seconds = time.monotonic() - start
    result.log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        result.problems.append(f"compiler exit status {proc.returncode}")
        return result
    if result.vendor == "amd":
        result.kernels, problems = evaluate_amd(result.output.read_text(), source.uses_matrix_cores,
                                                source.sgpr_spills_allowed)
    else:
        result.kernels, problems = evaluate_nvidia(result.log, source.nvidia_spills_allowed,
                                                   source.nvidia_spill_limit, source.nvidia_spill_limit_raised)
    result.problems += problems
    result.ok = not result.problems
    return result


def plan_targets(out_dir: Path, vendors=VENDORS):
    """The compilations to run as (result to fill, its KernelSource), and the vendors skipped
    for want of a compiler."""
    stems = [Path(s.path).stem for s in SOURCES]
    if len(set(stems)) != len(stems):
        raise ValueError(f"kernel source file names must be unique: {stems}")
    targets, skipped = [], []
    for vendor in vendors:
        compiler = find_compiler(vendor)
        if compiler is None:
            skipped.append(vendor)
            continue
        archs, command, suffix = (
            (AMD_ARCHS, amd_command, ".s") if vendor == "amd"
            else (NVIDIA_ARCHS, nvidia_command, ".cubin")
        )  # fmt: skip
        for source in SOURCES:
            for arch in archs:
                output = out_dir / f"{Path(source.path).stem}-{arch}{suffix}"
                cmd = command(compiler, REPO_ROOT / source.path, arch, output)
                targets.append(
                    (TargetResult(source.path, vendor, arch, cmd, output), source)
                )
    return targets, skipped


def run_checks(out_dir: Path, vendors=VENDORS, jobs: int | None = None) -> list[TargetResult]:
    """Compiles each source for each arch of every vendor whose compiler is present, in parallel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    targets, _ = plan_targets(out_dir, vendors)
    jobs = jobs or os.cpu_count() or 2
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: _compile(*t), targets))


def _demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    proc = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    pretty = proc.stdout.splitlines()
    if proc.returncode != 0 or len(pretty) != len(names):
        return {n: n for n in names}
    return {n: _strip_signature(p) for n, p in zip(names, pretty)}


def _strip_signature(name: str) -> str:
    """'void ns::k<A, B>(int*, float)' -> 'ns::k<A, B>'."""
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return name.removeprefix("void ")


def format_report(results: list[TargetResult], skipped: list[str]) -> str:
    names = _demangle(sorted({k.name for r in results for k in r.kernels}))
    lines = ["compile check: kernels for gfx942/gfx950 (clang-22) and sm_80/sm_90a (nvcc)", ""]
    for r in sorted(results, key=lambda r: (r.source, r.vendor, r.arch)):
        status = "ok" if r.ok else "FAILED"
        lines.append(f"[{status}] {r.vendor} {r.arch}  {r.source}  ({r.seconds:.1f} s)")
        for k in r.kernels:
            if r.vendor == "amd":
                mfma = ", ".join(f"{n} x{c}" for n, c in sorted(k.mfma.items())) or "no mfma"
                lines.append(
                    f"    vgpr {k.registers:3d}  agpr {k.agprs:3d}  sgpr {k.sgprs:3d}  "
                    f"scratch {k.scratch_bytes}  occupancy {k.occupancy}  {names[k.name]}  [{mfma}]"
                )
            else:
                lines.append(
                    f"    regs {k.registers:3d}  stack {k.scratch_bytes}  spill {k.spill_bytes}  "
                    f"{names[k.name]}"
                )
        if not r.ok:
            lines += ["    " + line for line in r.summary().splitlines()[1:]]
    for vendor in skipped:
        lines.append(f"[skipped] {vendor}: {INSTALL_HINTS[vendor]}")
    failed = sum(not r.ok for r in results)
    lines += ["", f"{len(results) - failed}/{len(results)} targets passed"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor", choices=VENDORS, action="append", help="default: both")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "build" / "compile_check")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument(
        "--require-compilers", action="store_true",
        default=os.environ.get("TFO_REQUIRE_COMPILERS") == "1",
        help="a missing compiler is an error (default when TFO_REQUIRE_COMPILERS=1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    vendors = tuple(args.vendor or VENDORS)

    start = time.monotonic()
    _, skipped = plan_targets(args.out_dir, vendors)
    results = run_checks(args.out_dir, vendors, args.jobs)
    report = format_report(results, skipped)
    report += f"wall time {time.monotonic() - start:.1f} s; outputs in {args.out_dir}\n"
    (args.out_dir / "report.txt").write_text(report)
    print(report, end="")

    if skipped and args.require_compilers:
        print(f"error: missing compiler for {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
