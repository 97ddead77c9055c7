"""Build of torch_flashinfer_ops._C.

CPU-only PyTorch: the operator registry and the C++ CPU kernels.
CUDA PyTorch:     adds the kernels of csrc/hip (compiled by nvcc, sm_80 and sm_90a).
ROCm PyTorch:     adds the same kernels compiled by hipcc for gfx942 and gfx950.

Knobs for quick builds (environment variables):
  TFO_CUDA_ARCHS   semicolon list of CUDA archs, default "80;90a"
  TFO_HIP_ARCHS    semicolon list of AMD archs, default: those of PyTorch's PYTORCH_ROCM_ARCH that
                   the kernels target (gfx942, gfx950), else "gfx942;gfx950"
  TFO_HEAD_DIMS    comma list of head dims to instantiate, default "64,128,256"
  TFO_DTYPES       comma list of q/kv dtypes to instantiate, default "f16,bf16"
  TFO_CPU_ONLY=1   build only the CPU kernels, whatever PyTorch supports
  TFO_TIMELINE=1   a profiling build: the decode kernels record per-task launch timelines
                   (benchmarks/decode_timeline.py); production builds leave it off
  TFO_KERNEL_VARIANTS  comma list of kernel variants under evaluation to build instead of the
                   default kernels (csrc/hip/kernels/kernel_variants.h lists them, as
                   lower-case names); for A/B runs, production builds leave it empty
  MAX_JOBS         parallel compile jobs (ninja)
"""
import glob
import importlib.util
import os
import re

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def instantiation_defines():
    head_dims = os.environ.get("TFO_HEAD_DIMS", "64,128,256")
    dtypes = os.environ.get("TFO_DTYPES", "f16,bf16")
    for d in head_dims.split(","):
        assert d.strip() in {"64", "128", "256"}, f"TFO_HEAD_DIMS: unsupported head dim {d!r}"
    for t in dtypes.split(","):
        assert t.strip() in {"f16", "bf16"}, f"TFO_DTYPES: unsupported dtype {t!r}"
    defines = [f"-DTFO_HEAD_DIM_{d.strip()}" for d in head_dims.split(",")]
    defines += [f"-DTFO_DTYPE_{t.strip().upper()}" for t in dtypes.split(",")]
    if os.environ.get("TFO_TIMELINE", "0") == "1":
        defines.append("-DTFO_TIMELINE")
    return defines + variant_defines(os.environ.get("TFO_KERNEL_VARIANTS", ""))


# The AMD architectures the kernels are written for: CDNA3 and CDNA4 (their MFMA shapes).
KERNEL_HIP_ARCHS = ("gfx942", "gfx950")


def hip_archs():
    """The AMD architectures to compile for. TFO_HIP_ARCHS as given; else those of PyTorch's own
    knob, PYTORCH_ROCM_ARCH (often set image-wide to every architecture PyTorch was built for),
    that the kernels are written for, an error when it names none of them; else both."""
    explicit = os.environ.get("TFO_HIP_ARCHS")
    if explicit:
        return [a.strip() for a in explicit.split(";") if a.strip()]
    named = [a for a in re.split(r"[;, ]", os.environ.get("PYTORCH_ROCM_ARCH", "")) if a]
    if named:
        archs = [a for a in named if a.split(":", 1)[0] in KERNEL_HIP_ARCHS]
        if not archs:
            raise SystemExit(f"PYTORCH_ROCM_ARCH names {', '.join(named)}; the kernels are written for "
                             f"{', '.join(KERNEL_HIP_ARCHS)} (CDNA3, CDNA4). Set TFO_HIP_ARCHS to build for "
                             "other architectures anyway.")
        return archs
    return list(KERNEL_HIP_ARCHS)


def kernel_variants_module():
    """tools/kernel_variants.py, loaded by path (the build cannot import the package)."""
    spec = importlib.util.spec_from_file_location("tfo_kernel_variants", os.path.join(ROOT, "tools", "kernel_variants.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_variants():
    """The variant switches kernel_variants.h defines (TFO_VARIANT_<NAME>), as lower-case names."""
    return kernel_variants_module().known()


def variant_defines(names):
    variants = kernel_variants_module()
    known = variants.known()
    chosen = variants.names(names)
    for name in chosen:
        assert name in known, f"TFO_KERNEL_VARIANTS: unknown variant {name!r} (known: {', '.join(known) or 'none'})"
    return [variants.define(name) for name in chosen]


def runtime_libstdcxx():
    """Path of the libstdc++ this process (and so PyTorch) runs with, on Linux; else None.

    Linked explicitly so that the extension shares it. Where the toolchain's libstdc++.so link
    is missing, the linker silently falls back to libstdc++.a: the extension then carries its
    own copy of the iostream/locale machinery, whose facet ids disagree with the process's, and
    formatting a number into an error message (any TORCH_CHECK with an integer) crashes.
    """
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so"):
                    return path
    except OSError:
        pass
    return None


def extension():
    cpu_sources = ["csrc/registry.cpp"] + rel("csrc/cpu/*.cpp")
    # The C++ standard is the one PyTorch builds with (cpp_extension adds it): headers compiled
    # under another standard than libtorch can disagree on layouts (seen: exceptions crashing).
    cxx_flags = ["-O3"]
    libstdcxx = runtime_libstdcxx()
    link_args = [libstdcxx] if libstdcxx else []
    gpu_sources = rel("csrc/hip/bindings/*.cu")
    want_gpu = os.environ.get("TFO_CPU_ONLY", "0") != "1" and bool(gpu_sources)
    is_rocm = torch.version.hip is not None
    if want_gpu and (torch.version.cuda is not None or is_rocm):
        defines = ["-DTFO_WITH_GPU_KERNELS"] + instantiation_defines()
        # csrc/hip: the kernels include the platform layer as "gpu_iface/...".
        include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "hip")]
        if is_rocm:
            gpu_flags = ["-O3"] + [f"--offload-arch={a}" for a in hip_archs()]
            # On ROCm, CUDAExtension runs PyTorch's hipify over the sources and over every header
            # it finds through include_dirs. Only the bindings (CUDA runtime and c10::cuda names)
            # are to be translated: the kernels and the platform layer are HIP C++ already, and
            # hipify's cuda -> hip path mapping would write its translation of the NVIDIA backend
            # (gpu_iface/backend/cuda) over the AMD one (gpu_iface/backend/hip). So the include
            # paths reach the compilers as flags, where hipify does not look
            # (tests/test_rocm_build.py runs this build's hipify step).
            include_flags = [f"-I{d}" for d in include_dirs]
            cxx_flags = cxx_flags + include_flags
            gpu_flags = gpu_flags + include_flags
            include_dirs = []
        else:
            archs = os.environ.get("TFO_CUDA_ARCHS", "80;90a").split(";")
            gpu_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
            gpu_flags += [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        return CUDAExtension(
            "torch_flashinfer_ops._C",
            cpu_sources + gpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags + defines, "nvcc": gpu_flags + defines},
            extra_link_args=link_args,
        )
    return CppExtension(
        "torch_flashinfer_ops._C",
        cpu_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_args,
    )


setup(
    name="torch_flashinfer_ops",
    version="0.1.0",
    description="FlashInfer-compatible attention operators for AMD Instinct and NVIDIA GPUs",
    packages=["torch_flashinfer_ops", "meta_kernels"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.11",
    install_requires=["torch>=2.11"],
)
