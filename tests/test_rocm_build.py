"""A ROCm PyTorch build, the parts that run without ROCm (tools/rocm_build_step.py runs setup.py's
hipify step on a copy of the build inputs):

- hipify translates the operator bindings alone and leaves the HIP kernels and the platform layer
  as written, since those are what the AMD compile check and the emulated tiers verify (PyTorch's
  hipify maps a path's `cuda` directory to `hip`: given the kernels' include paths, it writes its
  translation of gpu_iface/backend/cuda over gpu_iface/backend/hip);
- the AMD architectures follow the knobs (TFO_HIP_ARCHS, PyTorch's PYTORCH_ROCM_ARCH);
- the kernel sources pass clang's front end with the flags the build gives hipcc."""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


try:
    from . import tool_modules
except ImportError:
    import tool_modules

rocm_build_step = tool_modules.load("rocm_build_step")
compile_check = tool_modules.load("compile_check")
KERNEL_SOURCES = [s.path for s in compile_check.SOURCES]

BINDINGS = sorted(p.name for p in (REPO / "csrc" / "hip" / "bindings").glob("*.cu"))


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    pytest.importorskip("torch.utils.hipify.hipify_python")
    work = tmp_path_factory.mktemp("rocm-step")
    return work, rocm_build_step.run(work)


def test_no_source_is_changed_or_removed(step):
    _, report = step
    assert report["changed"] == [] and report["removed"] == []


def test_only_the_bindings_and_their_plan_headers_are_translated(step):
    _, report = step
    allowed = re.compile(r"^csrc/(hip/bindings/\w+(\.hip|_hip\.h)|cpu/\w+_hip\.cpp|include/\w+_hip\.h)$")
    assert report["added"], "hipify translated nothing: the bindings use CUDA names"
    strays = [p for p in report["added"] if not allowed.match(p)]
    assert strays == [], f"hipify wrote outside the bindings: {strays}"
    assert not any(p.startswith(("csrc/hip/kernels/", "csrc/hip/gpu_iface/")) for p in report["added"])


def test_the_build_compiles_each_binding_translation(step):
    _, report = step
    gpu = sorted(Path(s).name for s in report["sources"] if s.startswith("csrc/hip/"))
    assert gpu == sorted(b[: -len(".cu")] + ".hip" for b in BINDINGS)


def test_include_paths_reach_the_compilers_as_flags(step):
    work, report = step
    project = [str(work / "csrc"), str(work / "csrc" / "hip")]
    assert not set(project) & set(report["include_dirs"])
    for compiler in ("cxx", "nvcc"):
        flags = report["extra_compile_args"][compiler]
        assert all(f"-I{d}" in flags for d in project), compiler


@pytest.mark.parametrize("binding", BINDINGS)
def test_translation_keeps_the_kernel_sources_and_std_math(step, binding):
    """The translated binding includes the same kernel files (not translated copies) and keeps
    std::min / std::max, which hipify rewrites to ::min / ::max when called as `std::min(`."""
    work, _ = step
    original = (REPO / "csrc" / "hip" / "bindings" / binding).read_text()
    translated = (work / "csrc" / "hip" / "bindings" / (binding[: -len(".cu")] + ".hip")).read_text()
    kernel_includes = re.compile(r'^#include "(kernels/[^"]+)"', re.M)
    assert kernel_includes.findall(translated) == kernel_includes.findall(original)
    bare_math = re.compile(r"(?<![\w:])::(min|max|ceil|floor|exp|log|pow|fabs|fmod)\(")
    assert len(bare_math.findall(translated)) == len(bare_math.findall(original)), binding


def _offload_archs(report):
    return [f.split("=", 1)[1] for f in report["extra_compile_args"]["nvcc"] if f.startswith("--offload-arch=")]


def test_default_archs_are_the_kernels(step):
    _, report = step
    assert _offload_archs(report) == ["gfx942", "gfx950"]


@pytest.mark.parametrize("env, archs", [
    ({"PYTORCH_ROCM_ARCH": "gfx90a;gfx942;gfx1100"}, ["gfx942"]),  # an image's list: the kernels' subset
    ({"PYTORCH_ROCM_ARCH": "gfx942:xnack-, gfx950"}, ["gfx942:xnack-", "gfx950"]),
    ({"PYTORCH_ROCM_ARCH": "gfx942", "TFO_HIP_ARCHS": "gfx90a"}, ["gfx90a"]),  # as the developer asks
])
def test_archs_follow_the_knobs(tmp_path, env, archs):
    pytest.importorskip("torch.utils.hipify.hipify_python")
    assert _offload_archs(rocm_build_step.run(tmp_path, env)) == archs


def test_pytorch_rocm_arch_without_a_kernel_arch_is_refused(tmp_path):
    pytest.importorskip("torch.utils.hipify.hipify_python")
    with pytest.raises(RuntimeError, match="PYTORCH_ROCM_ARCH names gfx90a; the kernels are written for gfx942"):
        rocm_build_step.run(tmp_path, {"PYTORCH_ROCM_ARCH": "gfx90a"})


def _clang_hip():
    """The AMD compile check's clang; skips without it, fails under TFO_REQUIRE_COMPILERS=1 (CI)."""
    clang = compile_check.find_compiler("amd")
    if clang is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail(compile_check.INSTALL_HINTS["amd"])
        pytest.skip(compile_check.INSTALL_HINTS["amd"])
    return clang


@pytest.mark.parametrize("source", KERNEL_SOURCES)
def test_kernels_compile_as_the_rocm_build_compiles_them(step, source):
    """The AMD compile check's kernel sources (the kernels the bindings launch, instantiated, and
    the fragment probe), with the flags the build gives hipcc (setup.py's offload archs, include
    paths and instantiations; PyTorch's HIP defines; C++20 from PyTorch 2.13), host pass and
    device passes, syntax only. The compile check compiles the device side alone; the translated
    bindings themselves need a ROCm PyTorch's headers, which this machine lacks."""
    work, report = step
    import torch.utils.cpp_extension as cpp_extension

    clang = _clang_hip()
    flags = [f for f in report["extra_compile_args"]["nvcc"] if f != "-O3"]
    assert [f for f in flags if f.startswith("--offload-arch=")] == ["--offload-arch=gfx942", "--offload-arch=gfx950"]
    cmd = [clang, "-x", "hip", "-fsyntax-only", "-nogpulib", "-std=c++20",
           *cpp_extension.COMMON_HIP_FLAGS, *cpp_extension.COMMON_HIPCC_FLAGS, *flags, str(work / source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    errors = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line)
    assert proc.returncode == 0, f"{source}:\n{errors or proc.stderr[-4000:]}"
