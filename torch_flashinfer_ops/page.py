"""Paged KV cache helpers: appending new K/V and the index arithmetic around it.

Cache layout: [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD) or
[num_pages, 2, num_kv_heads, page_size, head_dim] (HND), or a (k_cache, v_cache) pair.
Request r owns pages kv_indices[kv_indptr[r]:kv_indptr[r+1]]; its last page holds
kv_last_page_len[r] tokens.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from . import _debug
from . import _validation as V
from ._ops import ops
from ._wrapper_base import unpack_paged_kv_cache


def get_batch_indices_positions(append_indptr: torch.Tensor, seq_lens: torch.Tensor, nnz: int
                                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each appended token: its request and its position in the request's kv sequence.

    append_indptr [batch+1] indexes the appended tokens, seq_lens [batch] are the kv
    lengths after the append; returns (batch_indices, positions), int32 [nnz].
    """
    return ops.get_batch_indices_positions(append_indptr, seq_lens, nnz)


def get_seq_lens(kv_indptr: torch.Tensor, kv_last_page_len: torch.Tensor, page_size: int) -> torch.Tensor:
    """kv length of each request: (num_pages - 1) * page_size + kv_last_page_len."""
    return ops.get_seq_lens(kv_indptr, kv_last_page_len, page_size)


def append_paged_kv_cache(
    append_key: torch.Tensor,
    append_value: torch.Tensor,
    batch_indices: torch.Tensor,
    positions: torch.Tensor,
    paged_kv_cache: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
    kv_indices: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_last_page_len: torch.Tensor,
    kv_layout: str = "NHD",
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    enable_pdl: Optional[bool] = None,
) -> None:
    """Writes append_key/append_value [nnz, num_kv_heads, head_dim] into the cache at
    (batch_indices[i], positions[i]). An FP8 cache stores value / scale (k_scale, v_scale).

    enable_pdl: launch as a programmatic dependent launch, as the attention wrappers do (None:
    where the device has it, NVIDIA sm_90+; True elsewhere is an error). The kernel waits for the
    launch before it, so the result is the same either way; the launch's latency overlaps that
    kernel's tail."""
    layout = V.kv_layout_code(kv_layout)
    k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, kv_layout)
    V.check_same_device(append_key=append_key, append_value=append_value, batch_indices=batch_indices,
                        positions=positions, paged_kv_cache=k_cache, kv_indices=kv_indices,
                        kv_indptr=kv_indptr, kv_last_page_len=kv_last_page_len)
    if _debug.enabled(append_key):
        page_size = k_cache.shape[1] if kv_layout == "NHD" else k_cache.shape[2]
        _debug.check_append_slots(batch_indices, positions, kv_indices, kv_indptr, kv_last_page_len,
                                  page_size, k_cache.shape[0])
    ops.append_paged_kv_cache(append_key, append_value, batch_indices, positions, k_cache, v_cache,
                              kv_indices, kv_indptr, kv_last_page_len, layout,
                              V.check_scale("k_scale", k_scale), V.check_scale("v_scale", v_scale),
                              V.resolve_enable_pdl(enable_pdl, V.device_supports_pdl(append_key.device)))
