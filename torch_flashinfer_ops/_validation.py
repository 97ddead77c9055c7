"""Argument checks for the public API: each error names the offending argument."""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch

from ._ops import KV_LAYOUT_CODES
from .capabilities import FP8_DTYPES, HALF_DTYPES


def kv_layout_code(kv_layout: str) -> int:
    if kv_layout not in KV_LAYOUT_CODES:
        raise ValueError(f"kv_layout must be 'NHD' or 'HND', got {kv_layout!r}")
    return KV_LAYOUT_CODES[kv_layout]


def check_pos_encoding_mode(pos_encoding_mode: str) -> None:
    if pos_encoding_mode != "NONE":
        raise ValueError(
            f"pos_encoding_mode={pos_encoding_mode!r} is not served: only 'NONE' is "
            "(apply RoPE/ALiBi to q/k before calling)"
        )


def check_unserved(**kwargs) -> None:
    """Arguments FlashInfer accepts that this library does not serve: must be unset."""
    for name, value in kwargs.items():
        if value is not None and value is not False:
            raise ValueError(f"{name}={value!r} is not served by torch_flashinfer_ops; leave it unset")


def check_rope_args(rope_scale, rope_theta) -> None:
    # Only meaningful with a RoPE pos_encoding_mode, which is refused above.
    check_unserved(rope_scale=rope_scale, rope_theta=rope_theta)


def check_fp16_qk_reduction(use_fp16_qk_reduction: bool) -> None:
    if use_fp16_qk_reduction:
        raise ValueError(
            "use_fp16_qk_reduction=True is not served: scores are always reduced in float32"
        )


def check_q(q: torch.Tensor, name: str = "q", dims: int = 3) -> None:
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(q.shape)}")
    if q.dtype not in HALF_DTYPES:
        raise ValueError(f"{name} must be float16 or bfloat16, got {q.dtype}")
    if q.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension (stride {q.stride(-1)})")


_KV_DTYPES = HALF_DTYPES | FP8_DTYPES


def check_kv(k: torch.Tensor, v: torch.Tensor, names=("k", "v")) -> None:
    # Every check passing in one expression (the per-call cost of small calls); any failure takes
    # the loop below, which names it.
    if (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor) and k.dtype in _KV_DTYPES
            and k.dtype == v.dtype and k.stride(-1) == 1 and v.stride(-1) == 1 and k.shape == v.shape):
        return
    for t, name in zip((k, v), names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _KV_DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float8, got {t.dtype}")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last dimension")
    if k.dtype != v.dtype:
        raise ValueError(f"{names[0]} and {names[1]} must share a dtype, got {k.dtype} and {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}"
        )


def check_same_device(**tensors: Optional[torch.Tensor]) -> torch.device:
    device = None
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(f"{name} is on {t.device} but {first} is on {device}")
    return device


def check_heads(num_qo_heads: int, num_kv_heads: int) -> None:
    if num_kv_heads <= 0 or num_qo_heads <= 0:
        raise ValueError(f"num_qo_heads ({num_qo_heads}) and num_kv_heads ({num_kv_heads}) must be positive")
    if num_qo_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_qo_heads ({num_qo_heads}) must be a multiple of num_kv_heads ({num_kv_heads}): "
            "the GQA ratio must be an integer"
        )


def check_head_dim(name: str, got: int, expected: int) -> None:
    if got != expected:
        raise ValueError(f"{name}: head_dim {got} does not match {expected}")


def check_window_left(window_left: int) -> None:
    if not isinstance(window_left, int) or window_left < -1:
        raise ValueError(f"window_left must be -1 (no window) or a non-negative int, got {window_left!r}")


def check_soft_cap(logits_soft_cap: Optional[float]) -> float:
    if logits_soft_cap is None:
        return 0.0
    if not math.isfinite(logits_soft_cap) or logits_soft_cap < 0:
        raise ValueError(f"logits_soft_cap must be a finite number >= 0, got {logits_soft_cap!r}")
    return float(logits_soft_cap)


def resolve_sm_scale(sm_scale: Optional[float], head_dim: int, q_scale: Optional[float] = None) -> float:
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)
    if not math.isfinite(scale):
        raise ValueError(f"sm_scale must be finite, got {sm_scale!r}")
    if q_scale is not None:
        scale *= float(q_scale)
    return scale


def check_scale(name: str, value: Optional[float]) -> float:
    if value is None:
        return 1.0
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python float (per-tensor scale), got a tensor")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return float(value)


def _check_index_array(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be an int32 tensor, got {t.dtype}")


def host_int32s(*named) -> list:
    """Host copies of several (index array, name) pairs. Arrays on a GPU are copied into pinned
    memory without blocking and waited for once per device (one synchronisation for all of
    them instead of one per blocking copy)."""
    hosts, devices = [], set()
    for t, name in named:
        _check_index_array(t, name)
        if t.is_cuda:
            devices.add(t.device)
            hosts.append(t.to("cpu", torch.int32, non_blocking=True).contiguous())
        elif t.dtype == torch.int32 and t.is_contiguous():
            hosts.append(t)  # the common case, as serving loops build them: used as it is
        else:
            hosts.append(t.to("cpu", torch.int32).contiguous())
    for device in devices:
        torch.cuda.current_stream(device).synchronize()
    return hosts


def check_indptr(indptr: torch.Tensor, name: str, batch_size: Optional[int] = None) -> None:
    """indptr (host int32): starts at 0, non-decreasing, batch_size + 1 entries."""
    if indptr.numel() < 1:
        raise ValueError(f"{name} must have at least one entry")
    if batch_size is not None and indptr.numel() != batch_size + 1:
        raise ValueError(f"{name} must have batch_size + 1 = {batch_size + 1} entries, got {indptr.numel()}")
    a = indptr.numpy()  # host checks in numpy: a few microseconds for large batches
    if a[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {int(a[0])}")
    if a.size > 1 and (a[1:] < a[:-1]).any():
        raise ValueError(f"{name} must be non-decreasing")


def check_out(out: Optional[torch.Tensor], shape: Sequence[int], dtype: torch.dtype, device, name="out"):
    if out is None:
        return
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {out.dtype}")
    if out.device != device:
        raise ValueError(f"{name} must be on {device}, got {out.device}")
    if out.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")


def check_lse(lse: Optional[torch.Tensor], shape: Sequence[int], device) -> None:
    if lse is None:
        return
    if tuple(lse.shape) != tuple(shape) or lse.dtype != torch.float32 or not lse.is_contiguous():
        raise ValueError(
            f"lse must be a contiguous float32 tensor of shape {tuple(shape)}, got "
            f"{lse.dtype} {tuple(lse.shape)}"
        )
    if lse.device != device:
        raise ValueError(f"lse must be on {device}, got {lse.device}")


def check_no_extra_args(args: tuple, where: str) -> None:
    if args:
        raise TypeError(
            f"{where}: unexpected positional arguments {len(args)} (customised JIT kernels are not served)"
        )


@torch.compiler.assume_constant_result
def device_supports_pdl(device: torch.device) -> bool:
    """Programmatic dependent launch: NVIDIA sm_90 or newer. Under torch.compile a trace-time
    constant (the device query is a host call a graph cannot hold)."""
    return _supports_pdl(device.type, device.index)


@functools.lru_cache(maxsize=None)
def _supports_pdl(device_type: str, index: Optional[int]) -> bool:
    return (device_type == "cuda" and torch.version.hip is None and torch.cuda.is_available()
            and torch.cuda.get_device_capability(index)[0] >= 9)


def resolve_enable_pdl(enable_pdl: Optional[bool], supported: bool) -> bool:
    """FlashInfer's enable_pdl (batch decode and prefill; append_paged_kv_cache too): None takes
    programmatic dependent launch where the device has it (as FlashInfer does); True where it has
    not is an error, not ignored."""
    if enable_pdl is None:
        return supported
    if enable_pdl and not supported:
        raise ValueError(
            "enable_pdl=True needs programmatic dependent launch (NVIDIA sm_90 or newer); pass None or False"
        )
    return bool(enable_pdl)
