"""Kernel variants under evaluation (csrc/hip/kernels/kernel_variants.h): build-time switches
named by setup.py's TFO_KERNEL_VARIANTS and reported by _C.kernel_variants_built(). The three
lists of names (the header's switches, setup.py's reading of them, build_info.cpp's report) must
agree, or an A/B build would time or report another build than it names. The variants' numerics
are checked by the NVIDIA emulated tier (tests/test_cuda_emulated.py, its variants build)."""
import re
import runpy
from pathlib import Path

import pytest
import setuptools

import torch_flashinfer_ops as flashinfer

REPO = Path(__file__).resolve().parents[1]


def header_switches():
    text = (REPO / "csrc" / "hip" / "kernels" / "kernel_variants.h").read_text()
    return sorted(re.findall(r"^#ifdef TFO_VARIANT_(\w+)$", text, re.M))


@pytest.fixture(scope="module")
def setup_module_globals():
    """setup.py's functions, without running setup() (it is called at import)."""
    calls = []
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: calls.append(kwargs)
    try:
        env = runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")
    finally:
        setuptools.setup = original
    assert calls, "setup.py did not call setup()"
    return env


def test_each_switch_defines_its_constant_and_a_kernel_reads_it():
    """(The header may list none: a variant that won became the default, one that lost was
    deleted, and the header waits for the next change prepared without a GPU.)"""
    switches = header_switches()
    header = (REPO / "csrc" / "hip" / "kernels" / "kernel_variants.h").read_text()
    constants = re.findall(r"^inline constexpr bool (kVariant\w+) = true;", header, re.M)
    assert len(constants) == len(switches)
    kernels = "".join(p.read_text() for p in (REPO / "csrc" / "hip" / "kernels").rglob("*.h")
                      if p.name != "kernel_variants.h")
    for constant in constants:
        assert constant in kernels, f"{constant} is defined but no kernel reads it"


def test_setup_defines_the_named_switches_and_rejects_unknown_names(setup_module_globals):
    known = setup_module_globals["kernel_variants"]()
    assert known == sorted(s.lower() for s in header_switches())
    defines = setup_module_globals["variant_defines"](" , ".join(known).upper())
    assert defines == [f"-DTFO_VARIANT_{s.upper()}" for s in known]
    assert setup_module_globals["variant_defines"]("") == []
    with pytest.raises(AssertionError, match="unknown variant 'no_such_variant'"):
        setup_module_globals["variant_defines"]("no_such_variant")


def test_build_info_reports_every_switch():
    source = (REPO / "csrc" / "cpu" / "build_info.cpp").read_text()
    reported = re.findall(r'#ifdef TFO_VARIANT_(\w+)\n\s+add\("(\w+)"\);', source)
    assert sorted(reported) == sorted((s, s.lower()) for s in header_switches())


def test_this_build_reports_its_variants():
    built = flashinfer._C.kernel_variants_built()
    assert isinstance(built, str)
    names = [n for n in built.split(",") if n]
    assert set(names) <= {s.lower() for s in header_switches()}
    if not flashinfer._C.gpu_kernels_built():
        assert names == []


def test_each_variant_is_named_after_the_family_it_changes():
    """The NVIDIA emulated tier builds a family's variants build only where that family has
    variants (tools/kernel_variants.family), so a variant's name must say which it changes."""
    import sys
    sys.path.insert(0, str(REPO / "tools"))
    import kernel_variants
    header = (REPO / "csrc" / "hip" / "kernels" / "kernel_variants.h").read_text()
    for name in kernel_variants.known():
        assert kernel_variants.family(name) in kernel_variants.FAMILIES
        kernels = REPO / "csrc" / "hip" / "kernels" / kernel_variants.family(name)
        constant = re.search(rf"#ifdef TFO_VARIANT_{name.upper()}\ninline constexpr bool (kVariant\w+)", header).group(1)
        assert any(constant in p.read_text() for p in kernels.rglob("*") if p.is_file()), (
            f"{name}: {constant} is read by no kernel of csrc/hip/kernels/{kernel_variants.family(name)}")
    assert kernel_variants.family("decode_mma_head_columns") == "decode"
    with pytest.raises(ValueError, match="named after the family"):
        kernel_variants.family("mma_head_columns")
