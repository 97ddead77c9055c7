"""AMD emulated tier: the AMD backend's code run on the host under the wave64 emulation
(tests/amd_emulation/), against a float64 reference.

The kernels are built for the host with clang-22 as gfx942 (K = 32 fragments fed to two 16x16x16
MFMAs) and as gfx950 (__gfx950__: one 16x16x32 MFMA); MFMA operand and result layouts come from
AMD's matrix instruction calculator. What this proves: the AMD fragment interface (operand
loads from swizzled LDS tiles, MFMA register layouts, accumulator coordinates) and the DPP /
ds_bpermute row reductions compute what the shared algorithm code expects of them. It does not
prove timing, memory ordering between waves, or the real hardware's behaviour.

Skips without clang-22 unless TFO_REQUIRE_COMPILERS=1 (CI), where a missing compiler fails.
"""
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EMULATION = REPO / "tests" / "amd_emulation"
ARCHS = ("gfx942", "gfx950")
TILE = 64


def _clang():
    clang = shutil.which(os.environ.get("TFO_CLANG", "clang++-22"))
    if clang is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail("clang++-22 is required for the AMD emulated tier (TFO_REQUIRE_COMPILERS=1)")
        pytest.skip("clang++-22 not found: apt-get install clang-22")
    return clang


@pytest.fixture(scope="module")
def probe_libs(tmp_path_factory):
    clang = _clang()
    out = tmp_path_factory.mktemp("amd_emulation")
    libs = {}
    for arch in ARCHS:
        lib = out / f"tile_gemm_probe_{arch}.so"
        # compiler-rt: float -> bfloat16 conversions call __truncsfbf2, which libgcc may lack.
        cmd = [clang, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-rtlib=compiler-rt",
               *(["-D__gfx950__"] if arch == "gfx950" else []),
               "-I", str(REPO / "csrc" / "hip"), "-I", str(EMULATION),
               str(EMULATION / "tile_gemm_probe_emulated.cpp"), "-o", str(lib)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-4000:]}"
        handle = ctypes.CDLL(str(lib))
        handle.tfo_emu_tile_gemm_probe.restype = ctypes.c_int
        libs[arch] = handle
    return libs


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("b_layout", ["nk", "kn"])
def test_tile_gemm_probe_under_emulation(probe_libs, arch, dtype, b_layout):
    """c = a @ B through LDS tiles and MFMA fragments, then the row max and the row sum of
    exp2(c - max) through the row reductions: every element against float64."""
    g = torch.Generator().manual_seed(hash((arch, str(dtype), b_layout)) % (1 << 31))
    a = torch.randn(TILE, TILE, generator=g).to(dtype)
    b = torch.randn(TILE, TILE, generator=g).to(dtype)
    c = torch.full((TILE, TILE), float("nan"))
    row_max = torch.full((TILE,), float("nan"))
    row_sum = torch.full((TILE,), float("nan"))
    status = probe_libs[arch].tfo_emu_tile_gemm_probe(
        0 if dtype == torch.float16 else 1, 0 if b_layout == "nk" else 1,
        _ptr(a), _ptr(b), _ptr(c), _ptr(row_max), _ptr(row_sum))
    assert status == 0
    a64, b64 = a.double().numpy(), b.double().numpy()
    ref_c = a64 @ (b64.T if b_layout == "nk" else b64)
    ref_max = ref_c.max(axis=1)
    ref_sum = np.exp2(ref_c - ref_max[:, None]).sum(axis=1)
    got = c.double().numpy()
    assert not np.isnan(got).any(), "unwritten elements of c"
    # Products of 16-bit values are exact; only the float32 accumulation rounds.
    np.testing.assert_allclose(got, ref_c, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(row_max.double().numpy(), ref_max, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(row_sum.double().numpy(), ref_sum, rtol=1e-4)
