"""Custom attention masks: FlashInfer's bit-packed format.

A request's boolean mask [qo_len, kv_len] (True = attend) is flattened row-major and
packed eight bits per byte, least significant bit first ("little" bit order). In a
batch every request's mask starts at a byte boundary; mask_indptr[r] is the byte offset
of request r (the layout FlashInfer's segment_packbits produces).
"""
from __future__ import annotations

from typing import Tuple

import torch


def packed_nbytes(qo_lens: torch.Tensor, kv_lens: torch.Tensor) -> torch.Tensor:
    """Bytes per request (host int64)."""
    return (qo_lens.to(torch.int64) * kv_lens.to(torch.int64) + 7) // 8


def mask_indptr_for(qo_lens: torch.Tensor, kv_lens: torch.Tensor) -> torch.Tensor:
    """Byte offsets of each request's packed mask (host int32, batch + 1 entries)."""
    nbytes = packed_nbytes(qo_lens, kv_lens)
    indptr = torch.zeros(nbytes.numel() + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(nbytes, 0)
    return indptr.to(torch.int32)


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    n = bits.numel()
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.uint8, device=bits.device)
    padded[:n] = bits.to(torch.uint8)
    weights = (1 << torch.arange(8, dtype=torch.int32, device=bits.device)).to(torch.uint8)
    return (padded.view(-1, 8) * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def pack_custom_mask(
    custom_mask: torch.Tensor, qo_lens: torch.Tensor, kv_lens: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Packs a flattened boolean mask (sum of qo_len * kv_len entries) per request."""
    if custom_mask.dtype != torch.bool:
        raise ValueError(f"custom_mask must be a bool tensor, got {custom_mask.dtype}")
    flat = custom_mask.reshape(-1)
    sizes = (qo_lens.to(torch.int64) * kv_lens.to(torch.int64)).tolist()
    if flat.numel() != sum(sizes):
        raise ValueError(
            f"custom_mask holds {flat.numel()} entries but the batch needs sum(qo_len * kv_len) = {sum(sizes)}"
        )
    segments = torch.split(flat, sizes)
    packed = [_pack_bits(s) for s in segments]
    data = torch.cat(packed) if packed else torch.zeros(0, dtype=torch.uint8, device=flat.device)
    return data.contiguous(), mask_indptr_for(qo_lens, kv_lens)


def check_packed_mask(packed: torch.Tensor, qo_lens: torch.Tensor, kv_lens: torch.Tensor) -> torch.Tensor:
    """Validates a user-packed mask and returns its mask_indptr."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed_custom_mask must be uint8, got {packed.dtype}")
    indptr = mask_indptr_for(qo_lens, kv_lens)
    if packed.numel() < int(indptr[-1]):
        raise ValueError(
            f"packed_custom_mask holds {packed.numel()} bytes but the batch needs {int(indptr[-1])} "
            "(each request's mask packed separately, little bit order)"
        )
    return indptr
