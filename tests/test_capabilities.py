"""The capability table: routing, the errors it gives, and the GPU rows' dependence on what the
build contains (device-independent: the GPU state is simulated through the build queries)."""
import re

import pytest
import torch

from torch_flashinfer_ops import _ops, capabilities
from torch_flashinfer_ops.capabilities import Request, resolve_backend


def _req(op="single_prefill", platform="cuda", head_dim=128, dtype=torch.float16, options=()):
    return Request(op, platform, dtype, dtype, head_dim, 16, frozenset(options))


def test_cpu_routes_to_fa2_and_aiter_is_refused_on_cpu():
    assert resolve_backend("auto", _req(platform="cpu")) == "fa2"
    with pytest.raises(ValueError, match="aiter: not available on platform 'cpu'"):
        resolve_backend("aiter", _req(platform="cpu"))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("triton", _req(platform="cpu"))


def test_gpu_rows_follow_the_build(monkeypatch):
    monkeypatch.setattr(_ops, "gpu_kernels_built", lambda: True)
    monkeypatch.setattr(_ops, "gpu_instantiations", lambda: (frozenset({128}), frozenset({torch.float16})))
    assert resolve_backend("fa2", _req(head_dim=128)) == "fa2"
    assert resolve_backend("fa2", _req(op="batch_decode_paged", head_dim=128)) == "fa2"
    with pytest.raises(ValueError, match="not instantiated by this build"):
        resolve_backend("fa2", _req(head_dim=64))
    with pytest.raises(ValueError, match="not instantiated by this build"):
        resolve_backend("fa2", _req(dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="head_dim 96 is not served"):
        resolve_backend("fa2", _req(head_dim=96))


def test_gpu_rows_without_gpu_kernels(monkeypatch):
    monkeypatch.setattr(_ops, "gpu_kernels_built", lambda: False)
    monkeypatch.setattr(_ops, "gpu_instantiations", lambda: (frozenset(), frozenset()))
    with pytest.raises(ValueError, match="no GPU kernels"):
        resolve_backend("fa2", _req())


def test_aiter_rows_refuse_what_aiter_does_not_serve(monkeypatch):
    monkeypatch.setenv("TORCH_FLASHINFER_OPS_AITER_TRITON", "0")
    with pytest.raises(ValueError, match="opted in"):
        resolve_backend("aiter", _req(options={"causal"}))
    with pytest.raises(ValueError, match="sliding_window"):
        resolve_backend("aiter", _req(options={"sliding_window"}))
    with pytest.raises(ValueError, match="causal-only"):
        resolve_backend("aiter", _req(op="batch_prefill_paged"))


def test_readme_matrix_lists_every_row():
    matrix = capabilities.markdown_matrix()
    assert len(matrix.splitlines()) == 2 + len(capabilities.TABLE)


@pytest.mark.parametrize("built", [True, False])
def test_per_call_resolution_agrees_with_the_table(monkeypatch, built):
    """resolve_call (the single prefill/decode fast path, cached by plain arguments) gives the
    table's answer and its errors, also after the build queries change between calls."""
    monkeypatch.setattr(_ops, "gpu_kernels_built", lambda: built)
    monkeypatch.setattr(_ops, "gpu_instantiations",
                        lambda: (frozenset({128}), frozenset({torch.float16})) if built else (frozenset(), frozenset()))
    cases = [("single_prefill", "cpu", 128, torch.float16, ()), ("single_prefill", "cuda", 128, torch.float16, ("causal",)),
             ("single_prefill", "cuda", 64, torch.float16, ()), ("single_decode", "cuda", 128, torch.bfloat16, ()),
             ("single_prefill", "cuda", 96, torch.float16, ()), ("single_decode", "cpu", 256, torch.float16,
                                                                 ("sliding_window", "return_lse"))]
    for backend in ("auto", "fa2"):
        for op, platform, head_dim, dtype, options in cases:
            req = Request(op, platform, dtype, dtype, head_dim, options=frozenset(options))
            try:
                expected = resolve_backend(backend, req)
            except ValueError as e:
                with pytest.raises(ValueError, match=re.escape(str(e))):
                    capabilities.resolve_call(backend, op, platform, dtype, dtype, head_dim, frozenset(options))
                continue
            assert capabilities.resolve_call(backend, op, platform, dtype, dtype, head_dim,
                                             frozenset(options)) == expected
