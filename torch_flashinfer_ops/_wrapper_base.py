"""What the batch wrappers share: the workspace, backend choice, fixed CUDA-graph
buffers, paged-cache unpacking and the host-side index checks of plan()."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple, Union

import numpy as np
import torch

from . import _C
from . import _validation as V
from ._plan import Workspace
from ._upload import Upload
from .capabilities import check_backend_name, platform_of, resolve_backend


def parse_dtype(value: Union[str, torch.dtype, None], name: str) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name}: unknown dtype {value!r}")
    return dtype


def unpack_paged_kv_cache(
    paged_kv_cache: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]], kv_layout: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(k_cache, v_cache), each [pages, page_size, H, D] (NHD) or [pages, H, page_size, D] (HND)."""
    if isinstance(paged_kv_cache, (tuple, list)):
        if len(paged_kv_cache) != 2:
            raise ValueError("paged_kv_cache as a tuple must be (k_cache, v_cache)")
        k_cache, v_cache = paged_kv_cache
    elif isinstance(paged_kv_cache, torch.Tensor):
        if paged_kv_cache.dim() != 5 or paged_kv_cache.shape[1] != 2:
            raise ValueError(
                "paged_kv_cache must be [num_pages, 2, page_size, num_kv_heads, head_dim] (NHD) or "
                f"[num_pages, 2, num_kv_heads, page_size, head_dim] (HND), got {tuple(paged_kv_cache.shape)}"
            )
        k_cache, v_cache = paged_kv_cache.unbind(1)  # one call for both views (half of two indexings' host cost)
    else:
        raise TypeError(f"paged_kv_cache must be a tensor or a (k, v) tuple, got {type(paged_kv_cache).__name__}")
    for t, name in ((k_cache, "paged_kv_cache (k)"), (v_cache, "paged_kv_cache (v)")):
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [num_pages, ...], got shape {tuple(t.shape)}")
    V.check_kv(k_cache, v_cache, names=("paged_kv_cache (k)", "paged_kv_cache (v)"))
    return k_cache, v_cache


def paged_cache_geometry(k_cache: torch.Tensor, kv_layout: str) -> Tuple[int, int, int]:
    """(page_size, num_kv_heads, head_dim) of a 4-D cache."""
    if kv_layout == "NHD":
        return k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    return k_cache.shape[2], k_cache.shape[1], k_cache.shape[3]


_NO_PAGES = torch.empty(0, dtype=torch.int32)  # fill_kv_lens without last_page_len: kv_indptr counts rows


def paged_kv_lens(kv_indptr_h, kv_indices, last_page_len_h, batch_size, page_size,
                  indptr_name="paged_kv_indptr", indices_name="paged_kv_indices",
                  last_name="paged_kv_last_page_len") -> torch.Tensor:
    """The kv lengths of a paged batch (host int32), its index arrays checked in the same host
    pass (csrc/cpu/plan_host.cpp's fill_kv_lens); on a fault check_paged_indices names it."""
    check_indices_array(kv_indices, indices_name)
    lens = torch.empty(max(batch_size, 0), dtype=torch.int32)
    if page_size <= 0 or not _C.fill_kv_lens(kv_indptr_h, last_page_len_h, page_size, kv_indices.numel(), lens):
        check_paged_indices(kv_indptr_h, kv_indices, last_page_len_h, batch_size, page_size,
                            indptr_name, indices_name, last_name)
        raise AssertionError("fill_kv_lens refused index arrays that check_paged_indices accepts")
    return lens


def ragged_kv_lens(kv_indptr_h: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    """The kv lengths of a ragged batch (host int32), kv_indptr checked in the same host pass;
    on a fault check_indptr names it."""
    lens = torch.empty(max(batch_size, 0), dtype=torch.int32)
    if not _C.fill_kv_lens(kv_indptr_h, _NO_PAGES, 0, 0, lens):
        V.check_indptr(kv_indptr_h, name, batch_size)
        raise AssertionError("fill_kv_lens refused a kv_indptr that check_indptr accepts")
    return lens


def check_indices_array(kv_indices: torch.Tensor, name: str) -> None:
    """The page ids' shape and type (their count against indptr is checked with the indptr)."""
    if kv_indices.dim() != 1:
        raise ValueError(f"{name} must be 1-D")
    if kv_indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32, got {kv_indices.dtype}")


def check_paged_indices(kv_indptr_h, kv_indices, last_page_len_h, batch_size, page_size,
                        indptr_name="paged_kv_indptr", indices_name="paged_kv_indices",
                        last_name="paged_kv_last_page_len") -> None:
    V.check_indptr(kv_indptr_h, indptr_name, batch_size)
    if last_page_len_h.numel() != batch_size:
        raise ValueError(f"{last_name} must have batch_size = {batch_size} entries, got {last_page_len_h.numel()}")
    check_indices_array(kv_indices, indices_name)
    indptr, last = kv_indptr_h.numpy(), last_page_len_h.numpy()
    if kv_indices.numel() < indptr[-1]:
        raise ValueError(
            f"{indices_name} holds {kv_indices.numel()} page ids but {indptr_name}[-1] = {int(indptr[-1])}"
        )
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    bad = ((indptr[1:] - indptr[:-1]) > 0) & ((last < 1) | (last > page_size))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{last_name}[{r}] = {int(last[r])} must be in [1, page_size = {page_size}]")


class BatchWrapperBase:
    """Workspace, backend name, kv layout and the fixed buffers of CUDA-graph mode."""

    def __init__(self, float_workspace_buffer: torch.Tensor, kv_layout: str, use_cuda_graph: bool,
                 backend: str, jit_args=None, jit_kwargs=None, **graph_buffers):
        V.kv_layout_code(kv_layout)
        check_backend_name(backend)
        if jit_args is not None or jit_kwargs is not None:
            raise ValueError("jit_args/jit_kwargs (customised JIT kernels) are not served")
        self._workspace = Workspace(float_workspace_buffer)
        self._kv_layout = kv_layout
        self._backend = backend
        self._use_cuda_graph = use_cuda_graph
        self._graph_buffers = graph_buffers
        if use_cuda_graph:
            for name, buf in graph_buffers.items():
                if buf is not None and buf.device != float_workspace_buffer.device:
                    raise ValueError(f"{name} must be on the workspace's device {float_workspace_buffer.device}")
        self._plan = None
        self._pdl_supported = V.device_supports_pdl(self.device)

    @property
    def is_cuda_graph_enabled(self) -> bool:
        return self._use_cuda_graph

    @property
    def device(self) -> torch.device:
        return self._workspace.device

    @property
    def platform(self) -> str:
        return platform_of(self.device)

    def _gpu_index(self) -> int:
        """The workspace's GPU, as an index (the current one for a bare "cuda")."""
        index = self.device.index
        return index if index is not None else torch.cuda.current_device()

    def reset_workspace_buffer(self, float_workspace_buffer: torch.Tensor, *unused) -> None:
        self._workspace = Workspace(float_workspace_buffer)
        self._plan = None

    def _check_graph_capacity(self, **needed: int) -> None:
        """In CUDA-graph mode, every fixed buffer must hold the plan: checked before any write."""
        if not self._use_cuda_graph:
            return
        for name, count in needed.items():
            buf = self._graph_buffers.get(name)
            if buf is None:
                raise ValueError(f"use_cuda_graph=True needs {name} at construction")
            if count > buf.numel():
                raise ValueError(
                    f"{name} holds {buf.numel()} entries but this plan needs {count}; "
                    "construct the wrapper with buffers sized for the largest batch"
                )

    def _new_upload(self, non_blocking: bool) -> Upload:
        return Upload(self.device, non_blocking)

    def _send_index_arrays(self, upload: Upload, *arrays) -> list:
        """Sends `upload` (the plan's own copy, queued by Workspace.plan) with the index arrays,
        each (host copy, fixed buffer name, array as given): their run-time copies, in order.

        The host copy is the one plan() read; when the array as the caller passed it is already
        on the workspace's device it is used instead (as is outside CUDA-graph mode, as
        FlashInfer does; copied device to device into the fixed buffer otherwise), which saves
        a host-to-device copy. Each length follows the batch composition, so it is marked
        dynamic: a compiled graph that calls run() is reused across plans instead of being
        recompiled per length."""
        first = None
        for host, buffer_name, given in arrays:
            source = given if given is not None and given.device == self.device else host
            index = upload.add(source, self._fixed_home(buffer_name, source.numel()))
            first = index if first is None else first
        results = upload.send()
        copies = results[first:] if arrays else []
        for t in copies:
            torch._dynamo.maybe_mark_dynamic(t, 0)
        return copies

    def _fixed_home(self, buffer_name: str, count: int) -> Optional[torch.Tensor]:
        """In CUDA-graph mode, the prefix of the fixed buffer an array is copied into."""
        if not self._use_cuda_graph:
            return None
        self._check_graph_capacity(**{buffer_name: count})
        return self._graph_buffers[buffer_name][:count]

    def _copy_index_array(self, t: torch.Tensor, buffer_name: str, non_blocking: bool) -> torch.Tensor:
        """`t` on the workspace's device: a prefix of the fixed buffer in CUDA-graph mode."""
        if t.device.type == "cpu" and self.device.type == "cuda":
            # From pageable memory a host-to-device copy first waits for the stream's queued
            # work (CUDA's rule for pageable sources); staged in pinned memory (the caching host
            # allocator keeps the block until the copy has run) it is queued without waiting.
            t = t.pin_memory()
        home = self._fixed_home(buffer_name, t.numel())
        if home is not None:
            return home.copy_(t, non_blocking=non_blocking)
        return t.to(self.device, non_blocking=non_blocking)

    def _check_run_options(self, return_lse: bool, window_left: int) -> None:
        """Options that run() adds to the planned ones must be served by the chosen backend."""
        extra = set()
        if return_lse:
            extra.add("return_lse")
        if window_left >= 0:
            extra.add("sliding_window")
        if not extra <= self._request.options:
            resolve_backend(self._chosen, dataclasses.replace(self._request, options=self._request.options | extra))

    def _require_plan(self):
        if self._plan is None:
            raise RuntimeError("run() before plan(): call plan() with the batch's index arrays first")
        return self._plan

    def end_forward(self) -> None:
        """Deprecated alias kept for FlashInfer compatibility; has no effect."""
