#!/usr/bin/env python3
"""The first step of a ROCm PyTorch build of this project, run without ROCm.

On a ROCm build of PyTorch, `setup.py`'s CUDAExtension translates the CUDA sources with PyTorch's
hipify before anything compiles, writing the translations beside the originals. This runs that
step on a copy of the project's build inputs (setup.py, csrc/, tools/kernel_variants.py) with the
installed PyTorch told it is a ROCm build (torch.version.hip set, cpp_extension's
IS_HIP_EXTENSION on, a stand-in ROCM_HOME), in a child process so that nothing leaks into the
caller, and reports what the build would compile: the extension's sources, include directories
and compile flags, and every file the step wrote or changed.

Usage: python tools/rocm_build_step.py [--keep DIR]   (prints the report as JSON)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("setup.py", "csrc", "tools/kernel_variants.py")

# Runs in the copy: setup.py under a ROCm PyTorch's conditions, setuptools.setup captured.
_CHILD = r"""
import json, runpy, sys
import setuptools
import torch
import torch.utils.cpp_extension as cpp_extension
torch.version.hip = "6.4.0"
cpp_extension.IS_HIP_EXTENSION = True
cpp_extension.ROCM_HOME = sys.argv[1]
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path("setup.py", run_name="__main__")
[ext] = captured["ext_modules"]
print("ROCM_BUILD_STEP " + json.dumps({"sources": list(ext.sources), "include_dirs": list(ext.include_dirs),
                                        "extra_compile_args": ext.extra_compile_args}))
"""


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_inputs(dest: Path) -> None:
    for name in INPUTS:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("*.o", "__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _is_build_knob(name: str) -> bool:
    """An environment variable setup.py reads (its TFO_* knobs, PyTorch's PYTORCH_ROCM_ARCH)."""
    return name.startswith("TFO_") or name == "PYTORCH_ROCM_ARCH"


def run(work: Path, env: dict[str, str] | None = None) -> dict:
    """The hipify step in `work` (a fresh copy of the build inputs is made there), with the
    build's knobs (TFO_*, PYTORCH_ROCM_ARCH) at their defaults but for those given in `env`.
    Returns the extension's sources, include_dirs and extra_compile_args, the files the step
    added ("added") and the input files it changed or removed ("changed", "removed"), paths
    relative to `work`. Raises RuntimeError, with the step's output, where it fails."""
    work.mkdir(parents=True, exist_ok=True)
    copy_inputs(work)
    before = _digests(work)
    env = {**{k: v for k, v in os.environ.items() if not _is_build_knob(k)}, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(work / "rocm-home-stand-in")], cwd=work, env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ROCM_BUILD_STEP ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the ROCm build step failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                           f"{proc.stderr[-4000:]}")
    report = json.loads(lines[-1][len("ROCM_BUILD_STEP "):])
    after = _digests(work)
    report["added"] = sorted(set(after) - set(before))
    report["changed"] = sorted(p for p in before if p in after and after[p] != before[p])
    report["removed"] = sorted(set(before) - set(after))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this (empty) directory and keep it")
    args = parser.parse_args()
    if args.keep is not None:
        print(json.dumps(run(args.keep), indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="tfo-rocm-step-") as tmp:
        print(json.dumps(run(Path(tmp)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
