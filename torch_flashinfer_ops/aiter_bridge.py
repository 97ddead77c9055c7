"""The bridge to AMD's AITER library (PyPI package ``amd-aiter``; never ``aiter``).

It routes the FlashInfer calls to AITER's Triton attention kernels:

    single_prefill        -> aiter.ops.triton.mha.flash_attn_func
    batch_prefill_ragged  -> aiter.ops.triton.mha.flash_attn_varlen_func
    batch_prefill_paged   -> aiter.ops.triton.unified_attention.unified_attention (causal only)
    batch_decode_paged    -> aiter.ops.triton.unified_attention.unified_attention

and translates the arguments: FlashInfer's page table (kv_indptr/kv_indices/last_page_len)
becomes AITER's block table and sequence lengths at plan() time (host work, once per batch),
and AITER's natural-log lse [.., heads, tokens] becomes FlashInfer's base-2 [tokens, heads].

On ROCm the package is imported normally. On NVIDIA, AITER's Triton kernels run for
verification only when the user opts in (TORCH_FLASHINFER_OPS_AITER_TRITON=1): the package's
``__init__`` (which JIT-builds HIP modules) is bypassed, Triton's arch query answers an AMD
name so AITER's tuned configs are found, and AMD-only launch options are dropped.
Nothing here is imported until a call selects backend "aiter".
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import os
import sys
import types
from typing import Optional

import torch

OPT_IN_ENV = "TORCH_FLASHINFER_OPS_AITER_TRITON"
PATH_ENV = "TORCH_FLASHINFER_OPS_AITER_PATH"
LOG2E = 1.0 / math.log(2.0)
_AMD_ONLY_LAUNCH_OPTIONS = ("waves_per_eu", "matrix_instr_nonkdim", "kpack")
_ARCH_FOR_NVIDIA = "gfx950"  # its configs exist and its FP8 types are the OCP ones NVIDIA uses


def _package_dir() -> Optional[str]:
    """Folder of the ``aiter`` package, found without importing it."""
    explicit = os.environ.get(PATH_ENV)
    if explicit:  # the package folder itself, or a folder holding it
        for candidate in (os.path.join(explicit, "aiter"), explicit):
            if os.path.isfile(os.path.join(candidate, "ops", "triton", "mha.py")):
                return candidate
        return None
    spec = importlib.util.find_spec("aiter")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    return folder if os.path.isfile(os.path.join(folder, "ops", "triton", "mha.py")) else None


def unavailable_reason(platform: str) -> Optional[str]:
    """None when AITER can serve calls on `platform`, else why not (for errors and `auto`)."""
    if platform == "rocm":
        return None if _package_dir() is not None else (
            "AITER is not installed: pip install amd-aiter (the package named 'aiter' on PyPI is unrelated)")
    if platform == "cuda":
        if os.environ.get(OPT_IN_ENV) != "1":
            return (f"AITER's Triton kernels run on NVIDIA only when opted in: set {OPT_IN_ENV}=1 "
                    "with amd-aiter installed (or its unpacked folder in " + PATH_ENV + ")")
        if _package_dir() is None:
            return f"{OPT_IN_ENV}=1 but the amd-aiter package was not found (pip install amd-aiter, or set {PATH_ENV})"
        return None
    return f"AITER has no kernels for platform {platform!r}"


@dataclasses.dataclass
class _Kernels:
    flash_attn_func: object
    flash_attn_varlen_func: object
    unified_attention: object
    mha_config: dict


_KERNELS: Optional[_Kernels] = None


def _strip_amd_options(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _AMD_ONLY_LAUNCH_OPTIONS}


def _load() -> _Kernels:
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    on_rocm = torch.version.hip is not None
    folder = _package_dir()
    if folder is None:
        raise RuntimeError(unavailable_reason("rocm" if on_rocm else "cuda"))
    if "aiter" not in sys.modules:
        if on_rocm:
            importlib.import_module("aiter")
        else:
            package = types.ModuleType("aiter")
            package.__path__ = [folder]
            sys.modules["aiter"] = package
    arch_info = importlib.import_module("aiter.ops.triton.utils._triton.arch_info")
    if not on_rocm:
        arch_info.get_arch = lambda: _ARCH_FOR_NVIDIA
    mha = importlib.import_module("aiter.ops.triton.mha")
    mha_kernels = importlib.import_module("aiter.ops.triton._triton_kernels.mha")
    unified = importlib.import_module("aiter.ops.triton.unified_attention")
    config = mha_kernels._get_config(False, torch.float16)
    if not on_rocm:
        config = _strip_amd_options(config)
        select_2d, select_3d = unified.select_2d_config, unified.select_3d_config
        unified.select_2d_config = lambda *a, **k: _strip_amd_options(select_2d(*a, **k))
        unified.select_3d_config = lambda *a, **k: tuple(_strip_amd_options(c) for c in select_3d(*a, **k))
    _KERNELS = _Kernels(mha.flash_attn_func, mha.flash_attn_varlen_func, unified.unified_attention, config)
    return _KERNELS


def _lse_to_flashinfer(lse_natural_tokens_heads: torch.Tensor, lse_out: torch.Tensor) -> None:
    lse_out.copy_(lse_natural_tokens_heads * LOG2E)


def single_prefill(q, k, v, out, lse, causal: bool, sm_scale: float) -> None:
    """q [qo, Hq, D], k/v [kv, Hkv, D] (NHD) -> out, lse (base 2, [qo, Hq])."""
    kern = _load()
    result = kern.flash_attn_func(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), softmax_scale=sm_scale,
                                  causal=causal, return_lse=lse is not None, config=kern.mha_config)
    o, lse_nat = (result if lse is not None else (result, None))
    out.copy_(o[0])
    if lse is not None:
        _lse_to_flashinfer(lse_nat[0].transpose(0, 1), lse)


def batch_prefill_ragged(q, k, v, out, lse, qo_indptr, kv_indptr, max_qo_len: int, max_kv_len: int,
                         causal: bool, sm_scale: float) -> None:
    kern = _load()
    result = kern.flash_attn_varlen_func(q, k, v, qo_indptr, kv_indptr, max_qo_len, max_kv_len,
                                         softmax_scale=sm_scale, causal=causal, return_lse=lse is not None,
                                         config=kern.mha_config)
    o, lse_nat = (result if lse is not None else (result, None))
    out.copy_(o)
    if lse is not None:
        _lse_to_flashinfer(lse_nat, lse)


@dataclasses.dataclass
class PagedPlan:
    """AITER's view of a paged batch, built by plan() on the host."""

    block_table: torch.Tensor  # int32 [batch, max_pages], on the device
    seq_lens: torch.Tensor  # int32 [batch], on the device
    max_qo_len: int
    max_kv_len: int


def plan_paged(kv_indptr_h: torch.Tensor, kv_indices: torch.Tensor, kv_lens_h: torch.Tensor,
               qo_lens_h: torch.Tensor, device: torch.device) -> PagedPlan:
    """Page table translation: FlashInfer's CSR page lists -> a dense block table."""
    batch = kv_lens_h.numel()
    pages = (kv_indptr_h[1:] - kv_indptr_h[:-1]).to(torch.int64)
    max_pages = max(int(pages.max()) if batch else 0, 1)
    indices_h = kv_indices[: int(kv_indptr_h[-1])].to("cpu", torch.int32)
    table = torch.zeros(batch, max_pages, dtype=torch.int32)
    cols = torch.arange(max_pages).expand(batch, max_pages)
    valid = cols < pages.unsqueeze(1)
    table[valid] = indices_h
    return PagedPlan(table.to(device), kv_lens_h.to(device, torch.int32),
                     int(qo_lens_h.max()) if batch else 0, int(kv_lens_h.max()) if batch else 0)


def batch_paged(q, k_cache, v_cache, out, qo_indptr, plan: PagedPlan, sm_scale: float, window_left: int,
                logits_soft_cap: float, k_scale: float, v_scale: float) -> None:
    """q [tokens, Hq, D] against NHD pages [num_pages, page_size, Hkv, D]; causal."""
    kern = _load()
    fp8 = k_cache.dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
    k_descale = torch.full((1,), k_scale, dtype=torch.float32, device=q.device) if fp8 else None
    v_descale = torch.full((1,), v_scale, dtype=torch.float32, device=q.device) if fp8 else None
    kern.unified_attention(q, k_cache, v_cache, out, qo_indptr, max(plan.max_qo_len, 1), plan.seq_lens,
                           max(plan.max_kv_len, 1), sm_scale, True, (window_left, 0), plan.block_table,
                           logits_soft_cap, None, k_descale, v_descale)
