#!/usr/bin/env python3
"""Compile the CUDA operator bindings (csrc/hip/bindings/*.cu) with nvcc, without a GPU.

The bindings include PyTorch's CUDA headers, which a CPU-only PyTorch install ships but which in
turn include a few CUDA library headers (cuBLAS, cuSPARSE, cuSOLVER) and one file generated when
PyTorch is built with CUDA. Where those are missing, small stand-ins from
tools/binding_check_stubs/ fill in (the bindings use none of those libraries), so the bindings
get the same nvcc front end, template instantiation and host compilation as in a GPU build, with
the flags torch.utils.cpp_extension gives nvcc. Each source is built with one instantiation
(float16, head_dim 128) to keep this quick; the GPU build compiles them all.

The objects are then linked together as the extension links them (a relocatable link, `ld -r`):
a function defined outside a class in a kernel header and not marked inline compiles in each
binding that includes it and only fails there, as a multiple definition.

--define NAME adds a macro to every compile (e.g. --define TFO_TIMELINE: the profiling build).
--define USE_ROCM compiles the bindings' ROCm branches (ROCM_BRANCHES_PRELUDE below says how).
The language standard is the one the extension builds with for this PyTorch (C++20 from 2.13,
C++17 before); TFO_BINDING_STD=-std=c++17 checks the older one from a newer install.

Usage: python tools/binding_check.py [--source PATH ...] [--define NAME ...] [--jobs N] [--require-compilers]
Exit status 0 when every source compiles and the objects link. A missing nvcc skips, unless
--require-compilers or TFO_REQUIRE_COMPILERS=1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STUB_DIR = Path(__file__).resolve().parent / "binding_check_stubs"
BINDINGS = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "csrc" / "hip" / "bindings").glob("*.cu"))
# Instantiation knobs of setup.py: one dtype and head dim.
DEFINES = ["-DTFO_WITH_GPU_KERNELS", "-DTFO_DTYPE_F16", "-DTFO_HEAD_DIM_128"]
ARCH = "sm_90a"
COMPILE_TIMEOUT_S = 600


def find_nvcc() -> str | None:
    explicit = os.environ.get("TFO_NVCC")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return shutil.which("nvcc") or (shutil.which("/usr/local/cuda/bin/nvcc"))


def torch_flags() -> tuple[list[str], list[str]]:
    """(include dirs, nvcc flags) as torch.utils.cpp_extension builds CUDA sources."""
    import torch
    from torch.utils import cpp_extension

    includes = list(cpp_extension.include_paths()) + [sysconfig.get_paths()["include"]]
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    std = os.environ.get("TFO_BINDING_STD") or ("-std=c++20" if (major, minor) >= (2, 13) else "-std=c++17")
    flags = list(cpp_extension.COMMON_NVCC_FLAGS) + [std, "-DTORCH_API_INCLUDE_EXTENSION_H",
                                                     "-DTORCH_EXTENSION_NAME=_C"]
    return includes, flags


def missing_stubs(include_dirs: list[str], nvcc: str) -> list[Path]:
    """The stand-ins whose real header is found neither in torch's includes nor in the CUDA
    toolkit's include directory next to nvcc."""
    toolkit = Path(os.path.realpath(nvcc)).parent.parent / "include"
    search = [Path(d) for d in include_dirs] + [toolkit]
    stubs = sorted(p for p in STUB_DIR.rglob("*.h"))
    return [s for s in stubs if not any((d / s.relative_to(STUB_DIR)).exists() for d in search)]


def object_path(source: str, out_dir: Path) -> Path:
    return out_dir / (Path(source).stem + ".o")


# USE_ROCM (what PyTorch's ROCm builds define) selects the bindings' ROCm branches. Defined on the
# command line it would also select the ROCm branches of PyTorch's CUDA headers, which include ROCm
# libraries' headers; so those headers are included first, as they are, and USE_ROCM is defined
# after them (-include of this prelude). The bindings' CUDA runtime and c10::cuda names are what
# hipify maps one to one onto HIP's, so this checks that their ROCm branches compile (every call
# in them declared there) without a ROCm PyTorch; the HIP compile itself is not checked.
ROCM_BRANCHES = "USE_ROCM"
ROCM_BRANCHES_PRELUDE = """#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#define USE_ROCM 1
"""


def compile_one(nvcc: str, source: str, includes: list[str], flags: list[str], stub_root: str | None,
                out_dir: Path, extra_defines: tuple[str, ...] = ()) -> tuple[str, bool, str, float]:
    start = time.time()
    output = object_path(source, out_dir)
    defines = DEFINES + [f"-D{d}" for d in extra_defines if d != ROCM_BRANCHES]
    if ROCM_BRANCHES in extra_defines:
        prelude = out_dir / f"{Path(source).stem}_rocm_branches_prelude.h"  # one per compile: no races
        prelude.write_text(ROCM_BRANCHES_PRELUDE)
        defines += ["-include", str(prelude)]
    # One device pass, as setup.py asks for an architecture (-arch=sm_90a would add compute_90's).
    gencode = f"-gencode=arch=compute_{ARCH[3:]},code={ARCH}"
    cmd = [nvcc, "-c", "-O0", gencode, "-x", "cu", source, "-o", str(output), *flags, *defines,
           "-I", str(REPO_ROOT / "csrc"), "-I", str(REPO_ROOT / "csrc" / "hip")]
    for d in includes:
        cmd += ["-I", d]
    if stub_root:
        cmd += ["-I", stub_root]  # after the real include dirs: only missing headers come from here
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        ok, log = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        ok, log = False, f"timed out after {COMPILE_TIMEOUT_S} s"
    errors = "\n".join(line for line in log.splitlines() if "error" in line.lower())
    return source, ok, errors or log[-4000:], time.time() - start


def link_together(objects: list[Path], out_dir: Path) -> tuple[bool, str]:
    """(ok, errors) of a relocatable link of the objects: duplicate strong symbols fail it."""
    ld = shutil.which("ld")
    if ld is None:
        return True, "ld not found: link not checked"
    proc = subprocess.run([ld, "-r", "-o", str(out_dir / "linked.o"), *map(str, objects)], capture_output=True,
                          text=True, timeout=COMPILE_TIMEOUT_S)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def run(sources: list[str], jobs: int | None = None, link: list | None = None,
        extra_defines: tuple[str, ...] = (),
        variants: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> list[tuple[str, bool, str, float]]:
    """Compiles each source (with extra_defines as -D macros besides DEFINES); where `link` is a
    list and every source compiled, appends (ok, errors) of linking their objects together to it.
    variants: (source, defines) pairs compiled in the same pool but not linked, whose results
    follow the sources' (a second build's compiles keep the cores busy through the first's tail)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH or in /usr/local/cuda/bin (or set TFO_NVCC)")
    includes, flags = torch_flags()
    stubs = missing_stubs(includes, nvcc)
    with tempfile.TemporaryDirectory(prefix="tfo_binding_check_") as tmp:
        stub_root = None
        if stubs:
            stub_root = os.path.join(tmp, "stubs")
            for s in stubs:
                dest = Path(stub_root) / s.relative_to(STUB_DIR)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s, dest)
        units = [(s, tuple(extra_defines), Path(tmp)) for s in sources]
        for i, (source, defines) in enumerate(variants):
            out_dir = Path(tmp) / f"variant{i}"  # apart from the linked objects, which share names
            out_dir.mkdir()
            units.append((source, tuple(defines), out_dir))
        workers = jobs or max(1, min(len(units), os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(compile_one, nvcc, s, includes, flags, stub_root, out_dir, defines)
                       for s, defines, out_dir in units]
            results = [f.result() for f in futures]
        if link is not None and all(ok for _, ok, _, _ in results[:len(sources)]):
            link.append(link_together([object_path(s, Path(tmp)) for s in sources], Path(tmp)))
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="a binding source (default: all)")
    parser.add_argument("--define", action="append", default=[], help="a macro for every compile, e.g. TFO_TIMELINE")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--require-compilers", action="store_true",
                        default=os.environ.get("TFO_REQUIRE_COMPILERS") == "1")
    args = parser.parse_args(argv)
    if find_nvcc() is None:
        print("nvcc not found: skipped")
        return 1 if args.require_compilers else 0
    link: list[tuple[bool, str]] = []
    results = run(args.source or BINDINGS, args.jobs, link, tuple(args.define))
    def report(what: str, ok: bool, errors: str) -> None:
        print(f"[{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            print("    " + errors.replace("\n", "\n    "))

    for source, ok, errors, seconds in results:
        report(f"{source}  ({seconds:.1f} s)", ok, errors)
    for ok, errors in link:
        report("linked together", ok, errors)
    return 0 if all(ok for _, ok, _, _ in results) and all(ok for ok, _ in link) else 1


if __name__ == "__main__":
    sys.exit(main())
