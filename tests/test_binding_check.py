"""The CUDA operator bindings (csrc/hip/bindings) compile with nvcc against the installed
PyTorch's headers, with no GPU and no CUDA build of PyTorch (tools/binding_check.py). Catches a
binding that would not build before a GPU machine is needed to find out. A missing nvcc skips,
unless TFO_REQUIRE_COMPILERS=1 (CI)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tfo_binding_check", ROOT / "tools" / "binding_check.py")
bc = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bc
spec.loader.exec_module(bc)


@pytest.fixture(scope="module")
def results():
    if bc.find_nvcc() is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail("nvcc is required (TFO_REQUIRE_COMPILERS=1)")
        pytest.skip("nvcc not found")
    link = []
    compiled = {source: (ok, errors) for source, ok, errors, _ in bc.run(bc.BINDINGS, link=link)}
    return compiled, link


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


def test_a_broken_binding_fails(tmp_path):
    """The check can fail: a source calling an undeclared function does not compile."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    broken = tmp_path / "broken.cu"
    broken.write_text('#include "bindings/common.h"\nint f() { return not_declared_anywhere(); }\n')
    [(source, ok, errors, _)] = bc.run([str(broken)])
    assert not ok and "not_declared_anywhere" in errors


def test_a_symbol_defined_twice_fails_the_link(tmp_path):
    """The link can fail: two sources defining the same device function, not inline."""
    if bc.find_nvcc() is None:
        pytest.skip("nvcc not found")
    sources = []
    for name in ("one", "two"):
        src = tmp_path / f"{name}.cu"
        src.write_text(f"__device__ int twice() {{ return 2; }}\nint {name}() {{ return 1; }}\n")
        sources.append(str(src))
    link = []
    results = bc.run(sources, link=link)
    assert all(ok for _, ok, _, _ in results)
    [(ok, errors)] = link
    assert not ok and "multiple definition" in errors
