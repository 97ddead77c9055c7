"""Checked mode (TORCH_FLASHINFER_OPS_DEBUG=1): GPU operators that index memory with device
arrays (page tables, append slots) first check those arrays' contents, which costs a device
synchronisation per call, and raise the CPU path's errors instead of skipping or corrupting.

Off by default: serving loops must not synchronise. Skipped, even when enabled, while a CUDA
graph is being captured or torch.compile traces (neither may synchronise).
"""
import os

import numpy as np
import torch

ENV = "TORCH_FLASHINFER_OPS_DEBUG"


def enabled(*tensors: torch.Tensor) -> bool:
    """Checked mode is on and the call's tensors are on a GPU, outside capture and tracing."""
    if os.environ.get(ENV, "0") in ("", "0"):
        return False
    if not any(t.is_cuda for t in tensors):
        return False  # the CPU kernels check everything themselves
    if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
        return False
    return True


def check_append_slots(batch_indices, positions, kv_indices, kv_indptr, kv_last_page_len, page_size: int,
                       num_pages: int) -> None:
    """The slot checks of the CPU append_paged_kv_cache, on host copies of the device arrays."""
    op = "append_paged_kv_cache"
    bi, pos = batch_indices.cpu().numpy(), positions.cpu().numpy()
    indptr, indices, last = kv_indptr.cpu().numpy(), kv_indices.cpu().numpy(), kv_last_page_len.cpu().numpy()
    batch = last.size
    if indptr.size and indptr[-1] > indices.size:
        raise ValueError(f"{op}: kv_indptr[-1] = {indptr[-1]} exceeds kv_indices' {indices.size} entries")
    bad = np.flatnonzero((bi < 0) | (bi >= batch))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{op}: batch_indices[{i}] = {bi[i]} is out of range for batch_size {batch}")
    pages = (indptr[1:] - indptr[:-1]).astype(np.int64)
    kv_len = np.where(pages > 0, (pages - 1) * page_size + last, 0)
    bad = np.flatnonzero((pos < 0) | (pos >= kv_len[bi]))
    if bad.size:
        i, b = int(bad[0]), int(bi[bad[0]])
        raise ValueError(f"{op}: positions[{i}] = {pos[i]} is beyond request {b}'s {kv_len[b]} kv slots "
                         "(kv_indptr/kv_last_page_len)")
    used = indices[: indptr[-1]] if indptr.size else indices[:0]
    bad = np.flatnonzero((used < 0) | (used >= num_pages))
    if bad.size:
        raise ValueError(f"{op}: kv_indices entry {used[bad[0]]} is not a page of the cache ({num_pages} pages)")
