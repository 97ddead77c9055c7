"""The CUDA operator bindings (csrc/hip/bindings) compile with nvcc against the installed
PyTorch's headers, with no GPU and no CUDA build of PyTorch (tools/binding_check.py). Catches a
binding that would not build before a GPU machine is needed to find out. A missing nvcc skips,
unless TFO_REQUIRE_COMPILERS=1 (CI)."""

import os

import pytest

try:
    from .binding_compiles import bc, compiled
except ImportError:
    from binding_compiles import bc, compiled


@pytest.fixture(scope="module")
def results():
    if bc.find_nvcc() is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail("nvcc is required (TFO_REQUIRE_COMPILERS=1)")
        pytest.skip("nvcc not found")
    bindings, link, _, rocm = compiled()
    return bindings, link, rocm


def test_every_binding_source_is_checked():
    assert len(bc.BINDINGS) >= 5 and all(s.endswith(".cu") for s in bc.BINDINGS)


@pytest.mark.parametrize("source", bc.BINDINGS)
def test_binding_compiles(results, source):
    ok, errors = results[0][source]
    assert ok, f"{source} does not compile:\n{errors}"


def test_bindings_link_together(results):
    """As the extension links them: no symbol defined twice (a kernel header's function not
    marked inline, compiled into every binding that includes it)."""
    assert all(ok for ok, _ in results[0].values()), "a binding does not compile"
    [(ok, errors)] = results[1]
    assert ok, f"the binding objects do not link together:\n{errors}"


@pytest.mark.parametrize("source", bc.BINDINGS)
def test_binding_rocm_branches_compile(results, source):
    """The binding with USE_ROCM, as a ROCm PyTorch builds it, after PyTorch's own headers
    (binding_check.ROCM_BRANCHES_PRELUDE): what the ROCm branches call is declared there."""
    ok, errors = results[2][source]
    assert ok, f"{source}'s ROCm branches do not compile:\n{errors}"


def test_a_call_missing_from_the_rocm_branches_fails(tmp_path):
    """The ROCm-branch compile can fail: a call to what common.h declares for CUDA alone."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    source = tmp_path / "rocm_call.cu"
    source.write_text('#include "bindings/common.h"\n'
                      "void f() { (void)flashinfer_ops::gpu_binding::pdl_attribute(); }\n")
    [(_, ok_cuda, _, _), (_, ok_rocm, errors, _)] = bc.run(
        [str(source)], variants=((str(source), (bc.ROCM_BRANCHES,)),))
    assert ok_cuda and not ok_rocm and "pdl_attribute" in errors


def test_a_broken_binding_fails(tmp_path):
    """The check can fail: a source calling an undeclared function does not compile."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    broken = tmp_path / "broken.cu"
    broken.write_text('#include "bindings/common.h"\nint f() { return not_declared_anywhere(); }\n')
    [(source, ok, errors, _)] = bc.run([str(broken)])
    assert not ok and "not_declared_anywhere" in errors


def _two_sources(tmp_path, preamble):
    """Two source files, each the preamble and a host function of its own name."""
    sources = []
    for name in ("one", "two"):
        src = tmp_path / f"{name}.cu"
        src.write_text(f"{preamble}int {name}() {{ return 1; }}\n")
        sources.append(str(src))
    return sources


def test_a_symbol_defined_twice_fails_the_link(tmp_path):
    """The link can fail: two sources defining the same device function, not inline."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    sources = _two_sources(tmp_path, "__device__ int twice() { return 2; }\n")
    link = []
    results = bc.run(sources, link=link)
    assert all(ok for _, ok, _, _ in results)
    [(ok, errors)] = link
    assert not ok and "multiple definition" in errors


def test_variants_compile_apart_and_stay_out_of_the_link(tmp_path):
    """A variant of a source (other macros, same object name) is compiled in the same pool but
    neither replaces the source's object in the link nor fails it."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    sources = _two_sources(tmp_path, "#ifdef BREAK\n#error broken variant\n#endif\n")
    link = []
    results = bc.run(sources, link=link, variants=((sources[0], ("BREAK",)),))
    assert [ok for _, ok, _, _ in results] == [True, True, False]
    assert results[2][0] == sources[0] and "broken variant" in results[2][2]
    [(ok, errors)] = link
    assert ok, errors
