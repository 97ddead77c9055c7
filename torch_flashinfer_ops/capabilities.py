"""The capability table: what each backend serves, on which platform.

One table drives three things: ``backend="auto"`` routing, the errors for options a
backend does not serve (they quote the table), and the README's backend matrix
(``python -m torch_flashinfer_ops.capabilities`` prints it; a test keeps README in sync).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, FrozenSet, Iterable, Optional, Tuple

import torch

FP8_DTYPES = frozenset(
    {torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}
)
HALF_DTYPES = frozenset({torch.float16, torch.bfloat16})
# The head dims the fa2 GPU kernels are written for (a build may instantiate fewer: setup.py's
# TFO_HEAD_DIMS).
GPU_HEAD_DIMS = frozenset({64, 128, 256})

OPS = (
    "single_prefill",
    "single_decode",
    "batch_prefill_paged",
    "batch_prefill_ragged",
    "batch_decode_paged",
)

# Options a call may use; each row lists those it serves.
OPTIONS = (
    "causal",
    "custom_mask",
    "sliding_window",
    "logits_soft_cap",
    "return_lse",
    "kv_layout_HND",
)


@dataclasses.dataclass(frozen=True)
class Capability:
    backend: str  # "fa2" | "aiter"
    platform: str  # "cpu" | "cuda" | "rocm"
    ops: Tuple[str, ...]
    q_dtypes: FrozenSet[torch.dtype]
    kv_dtypes: FrozenSet[torch.dtype]
    head_dims: Optional[FrozenSet[int]]  # None: any
    page_sizes: Optional[FrozenSet[int]]  # None: any
    options: FrozenSet[str]
    # Known-bad combinations: (description, predicate over the request) -> refused.
    known_bad: Tuple[Tuple[str, Callable[["Request"], bool]], ...] = ()
    # Why the row is unavailable in this process, or None when it is available.
    unavailable_reason: Callable[[], Optional[str]] = lambda: None
    note: str = ""


@dataclasses.dataclass(unsafe_hash=True)  # hashed as a cache key; never mutated (dataclasses.replace copies)
class Request:
    """What one call needs; matched against Capability rows."""

    op: str
    platform: str
    q_dtype: torch.dtype
    kv_dtype: torch.dtype
    head_dim: int
    page_size: Optional[int] = None
    options: FrozenSet[str] = frozenset()


def _aiter_rows() -> Tuple[Capability, ...]:
    """AITER's Triton attention kernels (torch_flashinfer_ops/aiter_bridge.py): on ROCm, and on
    NVIDIA when opted in. NHD only; no custom masks; flash_attn_func refuses sliding windows
    and soft caps; unified_attention is causal-only and returns no lse."""
    from . import aiter_bridge

    mixed_dtypes = ("q and kv of different dtypes", lambda r: r.q_dtype != r.kv_dtype and r.kv_dtype in HALF_DTYPES)
    rows = []
    for platform in ("rocm", "cuda"):
        reason = (lambda p=platform: aiter_bridge.unavailable_reason(p))
        rows.append(Capability(
            backend="aiter", platform=platform, ops=("single_prefill", "batch_prefill_ragged"),
            q_dtypes=HALF_DTYPES, kv_dtypes=HALF_DTYPES, head_dims=frozenset({64, 128, 256}), page_sizes=None,
            options=frozenset({"causal", "return_lse"}), known_bad=(mixed_dtypes,), unavailable_reason=reason,
            note="aiter.ops.triton.mha.flash_attn_func / flash_attn_varlen_func"))
        rows.append(Capability(
            backend="aiter", platform=platform, ops=("batch_prefill_paged", "batch_decode_paged"),
            q_dtypes=HALF_DTYPES, kv_dtypes=HALF_DTYPES | FP8_DTYPES, head_dims=frozenset({64, 128, 256}),
            page_sizes=frozenset({16, 32, 64}), options=frozenset({"causal", "sliding_window", "logits_soft_cap"}),
            known_bad=(mixed_dtypes,
                       ("non-causal batch prefill (AITER's unified_attention is causal-only)",
                        lambda r: r.op == "batch_prefill_paged" and "causal" not in r.options)),
            unavailable_reason=reason,
            note="aiter.ops.triton.unified_attention (block table built by plan())"))
    return tuple(rows)


def _gpu_unavailable() -> Optional[str]:
    from ._ops import gpu_kernels_built

    if not gpu_kernels_built():
        return (
            "this build of torch_flashinfer_ops has no GPU kernels (built with CPU-only PyTorch "
            "or TFO_CPU_ONLY=1); rebuild with CUDA/ROCm PyTorch for fa2 on the GPU"
        )
    return None


def _not_instantiated(req: "Request") -> bool:
    """The build may instantiate a subset of head dims/dtypes (TFO_HEAD_DIMS, TFO_DTYPES)."""
    from ._ops import gpu_instantiations

    dims, dtypes = gpu_instantiations()
    return bool(dims) and (req.head_dim not in dims or req.q_dtype not in dtypes)


_NOT_INSTANTIATED = ("head_dim/dtype not instantiated by this build (see setup.py's TFO_HEAD_DIMS, "
                     "TFO_DTYPES)", _not_instantiated)


def _gpu_prefill_rows() -> Tuple[Capability, ...]:
    """fa2 prefill on the GPU (csrc/hip/kernels/prefill). Verified on an H100; the AMD build is
    compiled for gfx942/gfx950 and never run. AMD's batch kernels serve custom masks with a
    separate (masked) instantiation."""

    def row(platform, ops, options, note):
        return Capability(
            backend="fa2",
            platform=platform,
            ops=ops,
            q_dtypes=HALF_DTYPES,
            kv_dtypes=HALF_DTYPES,
            head_dims=GPU_HEAD_DIMS,
            page_sizes=None,
            options=frozenset(options),
            known_bad=(("kv dtype different from q dtype", lambda req: req.kv_dtype != req.q_dtype),
                       _NOT_INSTANTIATED),
            unavailable_reason=_gpu_unavailable,
            note=note,
        )

    batch_ops = ("batch_prefill_paged", "batch_prefill_ragged")
    return (
        row("cuda", ("single_prefill",) + batch_ops, OPTIONS,
            "FlashAttention-2-style kernels, mma.sync; verified on an H100"),
        row("rocm", ("single_prefill",) + batch_ops, OPTIONS, "the same kernels on MFMA (compiled, not run)"),
    )


TABLE: Tuple[Capability, ...] = (
    Capability(
        backend="fa2",
        platform="cpu",
        ops=OPS,
        q_dtypes=HALF_DTYPES,
        kv_dtypes=HALF_DTYPES | FP8_DTYPES,
        head_dims=None,
        page_sizes=None,
        options=frozenset(OPTIONS),
        note="C++ reference-grade kernels: blockwise fp32 online softmax, parallel over heads/requests",
    ),
    *_gpu_prefill_rows(),
    *(
        Capability(
            backend="fa2",
            platform=_gpu_platform,
            ops=("single_decode", "batch_decode_paged"),
            q_dtypes=HALF_DTYPES,
            kv_dtypes=HALF_DTYPES | FP8_DTYPES,
            head_dims=GPU_HEAD_DIMS,
            page_sizes=None,
            options=frozenset({"sliding_window", "logits_soft_cap", "return_lse", "kv_layout_HND"}),
            known_bad=(("16-bit kv dtype different from q dtype",
                        lambda req: req.kv_dtype in HALF_DTYPES and req.kv_dtype != req.q_dtype),
                       _NOT_INSTANTIATED),
            unavailable_reason=_gpu_unavailable,
            note="decode kernels (csrc/hip/kernels/decode): GQA group per block, split-KV with a merge; "
            "use_tensor_cores=True runs the group as a 16-row mma.sync/MFMA tile (AMD compiled, not run)",
        )
        for _gpu_platform in ("cuda", "rocm")
    ),
) + _aiter_rows()


def platform_of(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return "rocm" if torch.version.hip is not None else "cuda"
    raise ValueError(f"device: unsupported device type {device.type!r} (expected cpu or cuda)")


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))


def _mismatch(row: Capability, req: Request) -> Optional[str]:
    """Why `row` cannot serve `req`, naming the argument; None when it can."""
    if req.op not in row.ops:
        return f"op {req.op} is not served (served: {', '.join(row.ops)})"
    if req.q_dtype not in row.q_dtypes:
        return f"q dtype {req.q_dtype} is not served (served: {_dtype_names(row.q_dtypes)})"
    if req.kv_dtype not in row.kv_dtypes:
        return f"kv dtype {req.kv_dtype} is not served (served: {_dtype_names(row.kv_dtypes)})"
    if row.head_dims is not None and req.head_dim not in row.head_dims:
        return f"head_dim {req.head_dim} is not served (served: {sorted(row.head_dims)})"
    if req.page_size is not None and row.page_sizes is not None and req.page_size not in row.page_sizes:
        return f"page_size {req.page_size} is not served (served: {sorted(row.page_sizes)})"
    missing = sorted(req.options - row.options)
    if missing:
        return f"option(s) {', '.join(missing)} not served (served: {', '.join(sorted(row.options))})"
    for description, predicate in row.known_bad:
        if predicate(req):
            return f"known-bad combination refused: {description}"
    reason = row.unavailable_reason()
    if reason is not None:
        return reason
    return None


BACKENDS = ("auto", "fa2", "aiter")


def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve_backend(backend: str, req: Request) -> str:
    """The concrete backend that serves `req`, or a ValueError saying why none does."""
    return resolve_call(backend, req.op, req.platform, req.q_dtype, req.kv_dtype, req.head_dim, req.options,
                        req.page_size)


@torch.compiler.assume_constant_result
def resolve_call(backend: str, op: str, platform: str, q_dtype: torch.dtype, kv_dtype: torch.dtype,
                 head_dim: int, options: FrozenSet[str], page_size: Optional[int] = None) -> str:
    """resolve_backend by the request's fields, for the per-call operators (single prefill and
    decode): the fa2 answer is looked up without building and hashing a Request on every call.
    Under torch.compile the answer is taken at trace time as a constant (its arguments are; the
    build queries it makes are host calls a graph cannot hold)."""
    from . import _ops

    if backend in ("auto", "fa2") and _fa2_serves(op, platform, q_dtype, kv_dtype, head_dim, page_size, options,
                                                  _ops.gpu_kernels_built(), _ops.gpu_instantiations()):
        return "fa2"
    return _resolve(backend, Request(op, platform, q_dtype, kv_dtype, head_dim, page_size, options))


@functools.lru_cache(maxsize=4096)
def _fa2_serves(op, platform, q_dtype, kv_dtype, head_dim, page_size, options, *build) -> bool:
    """Whether fa2 serves the request with these fields. Its answer depends on the request and on
    what the build holds (`build`, part of the key only), so plan(), which asks on every call,
    walks the table once per request shape. AITER's availability can change (its opt-in): never
    cached."""
    try:
        return _resolve("fa2", Request(op, platform, q_dtype, kv_dtype, head_dim, page_size, options)) == "fa2"
    except ValueError:
        return False


def _resolve(backend: str, req: Request) -> str:
    check_backend_name(backend)
    candidates = ("fa2", "aiter") if backend == "auto" else (backend,)
    reasons = []
    for name in candidates:
        rows = [r for r in TABLE if r.backend == name and r.platform == req.platform]
        if not rows:
            served = sorted({r.platform for r in TABLE if r.backend == name})
            reasons.append(
                f"{name}: not available on platform {req.platform!r} in this build "
                f"(served platforms: {', '.join(served) if served else 'none'})"
            )
            continue
        op_rows = [r for r in rows if req.op in r.ops]
        if not op_rows:
            served = sorted({op for r in rows for op in r.ops})
            reasons.append(f"{name} on {req.platform}: op {req.op} is not served (served: {', '.join(served)})")
            continue
        for row in op_rows:
            why = _mismatch(row, req)
            if why is None:
                return name
            reasons.append(f"{name} on {req.platform}: {why}")
    raise ValueError(
        f"backend={backend!r} cannot serve {req.op} on {req.platform}: " + "; ".join(reasons)
    )


def markdown_matrix() -> str:
    """The README's backend/feature matrix, generated from TABLE."""
    lines = [
        "| backend | platform | ops | q dtypes | kv dtypes | head dims | page sizes | options |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in TABLE:
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                row.backend,
                row.platform,
                ", ".join(row.ops),
                _dtype_names(row.q_dtypes),
                _dtype_names(row.kv_dtypes),
                "any" if row.head_dims is None else ", ".join(map(str, sorted(row.head_dims))),
                "any" if row.page_sizes is None else ", ".join(map(str, sorted(row.page_sizes))),
                ", ".join(o for o in OPTIONS if o in row.options),
            )
        )
    return "\n".join(lines)


README_BEGIN = "<!-- capability-matrix:begin (generated by python -m torch_flashinfer_ops.capabilities --update-readme) -->"
README_END = "<!-- capability-matrix:end -->"


def readme_with_matrix(readme: str) -> str:
    """README text with the generated matrix between its markers."""
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{markdown_matrix()}\n{README_END}{tail}"


if __name__ == "__main__":
    import pathlib
    import sys

    if "--update-readme" in sys.argv:
        path = pathlib.Path(__file__).resolve().parents[1] / "README.md"
        path.write_text(readme_with_matrix(path.read_text()))
    else:
        print(markdown_matrix())
