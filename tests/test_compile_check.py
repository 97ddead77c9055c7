"""The kernels compile for gfx942/gfx950 (clang-22) and sm_80/sm_90a (nvcc), with no GPU needed.

Runs tools/compile_check.py: on AMD the ISA holds v_mfma and no kernel uses scratch; on NVIDIA no
kernel spills. A missing compiler skips its targets, unless TFO_REQUIRE_COMPILERS=1 (set in CI),
which turns it into a failure.
"""

import os
import re

import pytest

try:
    from . import tool_modules
except ImportError:
    import tool_modules


cc = tool_modules.load("compile_check")
REQUIRE_COMPILERS = os.environ.get("TFO_REQUIRE_COMPILERS") == "1"
TARGETS = [("amd", arch) for arch in cc.AMD_ARCHS] + [("nvidia", arch) for arch in cc.NVIDIA_ARCHS]


def _require_compiler(vendor):
    if cc.find_compiler(vendor) is None:
        reason = cc.INSTALL_HINTS[vendor]
        if REQUIRE_COMPILERS:
            pytest.fail(f"{reason}; TFO_REQUIRE_COMPILERS=1 requires it")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every available target, compiled once and in parallel."""
    out_dir = tmp_path_factory.mktemp("compile_check")
    found = cc.run_checks(out_dir)
    print("\n" + cc.format_report(found, []), end="")
    return {(r.vendor, r.arch, r.source): r for r in found}


@pytest.mark.parametrize("source", [s.path for s in cc.SOURCES])
@pytest.mark.parametrize("vendor,arch", TARGETS)
def test_kernels_compile_clean(vendor, arch, source, results):
    _require_compiler(vendor)
    result = results[(vendor, arch, source)]
    assert result.ok, result.summary()
    assert result.kernels, result.summary()
    assert all(k.registers > 0 for k in result.kernels), result.summary()


# The checks themselves must be able to fail: feed them output that breaks each rule.

_AMD_KERNEL_META = """
\t.amdgpu_metadata
---
amdhsa.kernels:
  - .agpr_count:     0
    .args:
      - .offset:         0
        .size:           8
    .name:           {name}
    .private_segment_fixed_size: {scratch}
    .sgpr_count:     20
    .sgpr_spill_count: {sgpr_spills}
    .uses_dynamic_stack: false
    .vgpr_count:     64
    .vgpr_spill_count: {spills}
amdhsa.target:   amdgcn-amd-amdhsa--gfx942
amdhsa.version:
  - 1
  - 2
...
\t.end_amdgpu_metadata
"""


def _amd_asm(body, scratch=0, spills=0, sgpr_spills=0, name="_Z6kernelv"):
    return (
        f"{name}:\n{body}\n.Lfunc_end0:\n; Occupancy: 8\n"
        + _AMD_KERNEL_META.format(name=name, scratch=scratch, spills=spills, sgpr_spills=sgpr_spills)
    )


_MFMA = "\tv_mfma_f32_16x16x16_f16 v[0:3], v[4:5], v[6:7], 0"


def test_amd_check_accepts_clean_isa():
    kernels, problems = cc.evaluate_amd(_amd_asm(_MFMA), uses_matrix_cores=True)
    assert problems == []
    assert [(k.registers, k.sgprs, k.occupancy) for k in kernels] == [(64, 20, 8)]
    assert kernels[0].mfma == {"v_mfma_f32_16x16x16_f16": 1}


@pytest.mark.parametrize(
    "asm, needle",
    [
        (_amd_asm(_MFMA, scratch=16), "scratch"),
        (_amd_asm(_MFMA, spills=2), "spills"),
        (_amd_asm("\tv_fma_f32 v0, v1, v2, v3"), "v_mfma"),
        ("\ts_endpgm\n", "no kernels"),
    ],
)
def test_amd_check_rejects(asm, needle):
    _, problems = cc.evaluate_amd(asm, uses_matrix_cores=True)
    assert any(needle in p for p in problems), problems


def test_amd_sgpr_lane_spills_pass_only_in_the_kernels_a_source_names():
    """SGPRs spilled into VGPR lanes (no memory) are allowed where a source names the kernel;
    anywhere else, and VGPR spills everywhere, fail."""
    allowed = r"^_Z6masked"
    _, problems = cc.evaluate_amd(_amd_asm(_MFMA, sgpr_spills=6, name="_Z6maskedv"), True, allowed)
    assert problems == []
    _, problems = cc.evaluate_amd(_amd_asm(_MFMA, sgpr_spills=6), True, allowed)
    assert any("spills" in p for p in problems), problems
    _, problems = cc.evaluate_amd(_amd_asm(_MFMA, spills=2, sgpr_spills=6, name="_Z6maskedv"), True, allowed)
    assert any("spills" in p for p in problems), problems
    _, problems = cc.evaluate_amd(_amd_asm(_MFMA, scratch=8, sgpr_spills=6, name="_Z6maskedv"), True, allowed)
    assert any("scratch" in p for p in problems), problems


def test_prefill_allows_lane_spills_in_its_masked_kernels_only():
    [source] = [s for s in cc.SOURCES if s.path.endswith("prefill_kernels.cu")]
    # <T, head_dim, kPaged, kPlanned, kTransformScores, kMasked, kSplitKv, kFewTiles>
    base = "_ZN3tfo7kernels7prefill14prefill_kernelIDF16_Li128ELb1ELb1ELb0EL"
    assert re.search(source.sgpr_spills_allowed, base + "b1ELb0ELb0EEEvNS1_13PrefillParamsEi")
    assert not re.search(source.sgpr_spills_allowed, base + "b0ELb0ELb0EEEvNS1_13PrefillParamsEi")
    single = "_ZN3tfo7kernels7prefill14prefill_kernelIDF16_Li128ELb0ELb0ELb0ELb0EL"
    assert not re.search(source.sgpr_spills_allowed, single + "b1ELb0EEEvNS1_13PrefillParamsEi")
    assert not re.search(source.sgpr_spills_allowed, single + "b0ELb1EEEvNS1_13PrefillParamsEi")


_PTXAS = """\
ptxas info    : Compiling entry function '_Z6kernelv' for 'sm_80'
ptxas info    : Function properties for _Z6kernelv
    {stack} bytes stack frame, {stores} bytes spill stores, {loads} bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 16384 bytes smem, 392 bytes cmem[0]
"""


def test_nvidia_check_accepts_clean_ptxas():
    kernels, problems = cc.evaluate_nvidia(_PTXAS.format(stack=0, stores=0, loads=0))
    assert problems == []
    assert [(k.name, k.registers) for k in kernels] == [("_Z6kernelv", 72)]


@pytest.mark.parametrize(
    "text, needle",
    [
        (_PTXAS.format(stack=8, stores=8, loads=0), "spill"),
        (_PTXAS.format(stack=0, stores=0, loads=4), "spill"),
        (_PTXAS.format(stack=32, stores=0, loads=0), "stack frame"),
        ("ptxas info    : 0 bytes gmem\n", "no kernels"),
    ],
)
def test_nvidia_check_rejects(text, needle):
    _, problems = cc.evaluate_nvidia(text)
    assert any(needle in p for p in problems), problems


def test_nvidia_spills_allowed_only_where_named_and_within_the_limit():
    text = _PTXAS.format(stack=16, stores=20, loads=32)
    _, problems = cc.evaluate_nvidia(text, r"^_Z6kernel", 64)
    assert problems == []
    _, problems = cc.evaluate_nvidia(text, r"^_Z6other", 64)  # another kernel named
    assert any("spill" in p for p in problems) and any("stack frame" in p for p in problems)
    _, problems = cc.evaluate_nvidia(_PTXAS.format(stack=16, stores=40, loads=32), r"^_Z6kernel", 64)
    assert any("72 bytes of spill" in p for p in problems), problems
    _, problems = cc.evaluate_nvidia(_PTXAS.format(stack=80, stores=0, loads=0), r"^_Z6kernel", 64)
    assert any("stack frame" in p for p in problems), problems
    # A raised limit applies to the kernels it names among the allowed ones, and to no other.
    text = _PTXAS.format(stack=16, stores=40, loads=32)
    _, problems = cc.evaluate_nvidia(text, r"^_Z6kernel", 64, (r"^_Z6kernel", 80))
    assert problems == []
    _, problems = cc.evaluate_nvidia(text, r"^_Z6kernel", 64, (r"^_Z6other", 80))
    assert any("72 bytes of spill" in p for p in problems), problems
    _, problems = cc.evaluate_nvidia(text, r"^_Z6other", 64, (r"^_Z6kernel", 80))
    assert any("limit 0" in p for p in problems), problems


def test_prefill_nvidia_spill_allowance_names_the_unrolled_d128_and_the_d256_kernels():
    source = next(s for s in cc.SOURCES if s.path.endswith("prefill_kernels.cu"))
    allowed = source.nvidia_spills_allowed

    def name(dtype, d, flags):  # flags: kPaged, kPlanned, kTransformScores, kMasked, kSplitKv, kFewTiles
        return (f"_ZN3tfo7kernels7prefill14prefill_kernelI{dtype}Li{d}E" + "".join(f"Lb{f}E" for f in flags) +
                "EEvNS1_13PrefillParamsEi")

    fp16, bf16 = "6__half", "13__nv_bfloat16"
    assert re.search(allowed, name(fp16, 128, (0, 0, 0, 0, 0, 0)))
    assert re.search(allowed, name(fp16, 128, (0, 0, 0, 0, 1, 0)))
    assert re.search(allowed, name(fp16, 128, (0, 0, 0, 0, 0, 1)))
    assert re.search(allowed, name(bf16, 128, (0, 0, 0, 0, 0, 0)))
    assert re.search(allowed, name(bf16, 128, (0, 0, 0, 0, 1, 0)))
    assert re.search(allowed, name(bf16, 128, (0, 1, 0, 0, 0, 0)))  # planned
    assert re.search(allowed, name(fp16, 128, (0, 1, 0, 0, 0, 0)))
    assert re.search(allowed, name(fp16, 128, (1, 1, 0, 0, 0, 0)))  # paged planned
    assert not re.search(allowed, name(fp16, 128, (0, 1, 1, 0, 0, 0)))  # planned, soft cap
    assert not re.search(allowed, name(fp16, 128, (1, 1, 0, 1, 0, 0)))  # planned, masked
    assert not re.search(allowed, name(fp16, 128, (0, 0, 1, 0, 0, 0)))  # soft cap
    assert not re.search(allowed, name(fp16, 64, (0, 1, 0, 0, 0, 0)))
    assert not re.search(allowed, name(fp16, 64, (0, 0, 0, 0, 0, 0)))
    assert re.search(allowed, name(fp16, 256, (0, 0, 0, 0, 0, 0)))  # single, 64-row one-buffer tiles
    assert re.search(allowed, name(bf16, 256, (0, 0, 1, 0, 1, 0)))  # soft cap, split
    assert re.search(allowed, name(fp16, 256, (0, 1, 0, 0, 0, 0)))  # planned ragged
    assert re.search(allowed, name(bf16, 256, (0, 1, 1, 0, 0, 0)))  # planned ragged, soft cap
    assert re.search(allowed, name(bf16, 256, (1, 1, 0, 0, 0, 0)))  # planned paged
    assert re.search(allowed, name(fp16, 256, (1, 1, 1, 0, 0, 0)))  # planned paged, soft cap
    assert not re.search(allowed, name(fp16, 256, (0, 1, 0, 1, 0, 0)))  # masked variant
    assert not re.search(allowed, name(bf16, 256, (0, 0, 0, 0, 0, 1)))
    assert 0 < source.nvidia_spill_limit <= 68
    raised, raised_limit = source.nvidia_spill_limit_raised
    assert raised_limit <= 80
    assert re.search(raised, name(fp16, 128, (1, 1, 0, 0, 0, 0)))  # paged planned
    assert re.search(raised, name(bf16, 128, (1, 1, 0, 0, 0, 0)))
    assert not re.search(raised, name(fp16, 128, (0, 1, 0, 0, 0, 0)))  # ragged planned
    assert not re.search(raised, name(fp16, 128, (0, 0, 0, 0, 0, 0)))  # single
    assert not re.search(raised, name(bf16, 256, (1, 1, 0, 0, 0, 0)))
