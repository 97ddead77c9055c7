"""Decode attention: one query token per request against its KV cache.

Shapes (NHD layout; HND swaps the token and head axes of k/v):
    q            [num_qo_heads, head_dim] (single) or [batch, num_qo_heads, head_dim]
    k, v         [kv_len, num_kv_heads, head_dim]
    paged cache  [num_pages, 2, page_size, num_kv_heads, head_dim] or (k_cache, v_cache)
    lse          float32 [num_qo_heads] / [batch, num_qo_heads], base 2
FP8 caches (float8_e4m3fn/e5m2, and the fnuz variants) are dequantised as value * scale.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch

from . import _validation as V
from . import aiter_bridge
from ._ops import decode_four_block_grid, decode_grid_blocks, decode_wide_tasks, ops
from ._plan import decode_kernel
from ._wrapper_base import (
    BatchWrapperBase,
    paged_cache_geometry,
    paged_kv_lens,
    parse_dtype,
    unpack_paged_kv_cache,
)
from .capabilities import Request, platform_of, resolve_backend, resolve_call


def _options(window_left, cap, return_lse, kv_layout):
    opts = set()
    if window_left >= 0:
        opts.add("sliding_window")
    if cap:
        opts.add("logits_soft_cap")
    if return_lse:
        opts.add("return_lse")
    if kv_layout == "HND":
        opts.add("kv_layout_HND")
    return frozenset(opts)


def single_decode_with_kv_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_tensor_cores: bool = False,
    q_scale: Optional[float] = None,
    k_scale: Optional[float] = None,
    v_scale: Optional[float] = None,
    window_left: int = -1,
    logits_soft_cap: Optional[float] = None,
    sm_scale: Optional[float] = None,
    rope_scale: Optional[float] = None,
    rope_theta: Optional[float] = None,
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Decode attention of one request: q [num_qo_heads, head_dim] against k/v."""
    # Common cases inline first: a decode call's host cost is of the order of its kernel's.
    if pos_encoding_mode != "NONE":
        V.check_pos_encoding_mode(pos_encoding_mode)
    if rope_scale is not None or rope_theta is not None:
        V.check_rope_args(rope_scale, rope_theta)
    layout = V.kv_layout_code(kv_layout)
    V.check_q(q, dims=2)
    V.check_kv(k, v)
    if k.dim() != 3:
        raise ValueError(f"k must be 3-D, got shape {tuple(k.shape)}")
    device = q.device
    if k.device != device or v.device != device:
        device = V.check_same_device(q=q, k=k, v=v)
    num_qo_heads, head_dim = q.shape
    num_kv_heads = k.shape[1] if kv_layout == "NHD" else k.shape[0]
    V.check_head_dim("k", k.shape[2], head_dim)
    V.check_heads(num_qo_heads, num_kv_heads)
    V.check_window_left(window_left)
    cap = V.check_soft_cap(logits_soft_cap)
    ks, vs = V.check_scale("k_scale", k_scale), V.check_scale("v_scale", v_scale)
    resolve_call("auto", "single_decode", platform_of(device), q.dtype, k.dtype, head_dim,
                 _options(window_left, cap, return_lse, kv_layout))
    out = torch.empty_like(q)
    lse = torch.empty(num_qo_heads, dtype=torch.float32, device=q.device) if return_lse else None
    ops.single_decode(q, k, v, out, lse, layout, window_left, V.resolve_sm_scale(sm_scale, head_dim, q_scale),
                      cap, ks, vs, bool(use_tensor_cores))
    return (out, lse) if return_lse else out


@functools.lru_cache(maxsize=None)
def _decode_launch_shape(device_index: int, q_dtype, kv_dtype, head_dim, num_qo_heads, num_kv_heads,
                         use_tensor_cores):
    """(decode_grid_blocks, decode_wide_tasks, decode_four_block_grid) per GPU and configuration:
    occupancy and shared memory queries, asked once."""
    args = (q_dtype, kv_dtype, head_dim, num_qo_heads, num_kv_heads, use_tensor_cores)
    with torch.cuda.device(device_index):
        return decode_grid_blocks(*args), decode_wide_tasks(*args), decode_four_block_grid(*args)


class BatchDecodeWithPagedKVCacheWrapper(BatchWrapperBase):
    """Batched decode over a paged KV cache: plan once per step, run per layer."""

    def __init__(
        self,
        float_workspace_buffer: torch.Tensor,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        use_tensor_cores: bool = False,
        paged_kv_indptr_buffer: Optional[torch.Tensor] = None,
        paged_kv_indices_buffer: Optional[torch.Tensor] = None,
        paged_kv_last_page_len_buffer: Optional[torch.Tensor] = None,
        backend: str = "auto",
        jit_args=None,
    ) -> None:
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, backend, jit_args,
                         paged_kv_indptr_buffer=paged_kv_indptr_buffer,
                         paged_kv_indices_buffer=paged_kv_indices_buffer,
                         paged_kv_last_page_len_buffer=paged_kv_last_page_len_buffer)
        self._use_tensor_cores = bool(use_tensor_cores)
        # Set by the first compiled run(): its launches take the whole grid (_launch_task_blocks),
        # and later plans plan for that.
        self._runs_compiled = False

    @property
    def use_tensor_cores(self) -> bool:
        return self._use_tensor_cores

    def plan(
        self,
        indptr: torch.Tensor,
        indices: torch.Tensor,
        last_page_len: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim: int,
        page_size: int,
        pos_encoding_mode: str = "NONE",
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        q_data_type: Optional[Union[str, torch.dtype]] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        data_type: Optional[Union[str, torch.dtype]] = None,
        sm_scale: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        non_blocking: bool = True,
        block_tables: Optional[torch.Tensor] = None,
        seq_lens: Optional[torch.Tensor] = None,
    ) -> None:
        """Schedules the batch: indptr [batch+1], indices [indptr[-1]], last_page_len [batch]."""
        V.check_pos_encoding_mode(pos_encoding_mode)
        V.check_rope_args(rope_scale, rope_theta)
        V.check_unserved(block_tables=block_tables, seq_lens=seq_lens)
        V.check_heads(num_qo_heads, num_kv_heads)
        V.check_window_left(window_left)
        cap = V.check_soft_cap(logits_soft_cap)
        if data_type is not None:  # FlashInfer's older single-dtype argument
            q_data_type = kv_data_type = data_type
        q_dtype = parse_dtype(q_data_type, "q_data_type") or torch.float16
        kv_dtype = parse_dtype(kv_data_type, "kv_data_type") or q_dtype
        kv_indptr_h, last_h = V.host_int32s((indptr, "indptr"), (last_page_len, "last_page_len"))
        batch_size = kv_indptr_h.numel() - 1
        kv_lens_h = paged_kv_lens(kv_indptr_h, indices, last_h, batch_size, page_size,
                                  "indptr", "indices", "last_page_len")
        self._request = Request("batch_decode_paged", self.platform, q_dtype, kv_dtype, head_dim, page_size,
                                _options(window_left, cap, False, self._kv_layout))
        self._chosen = resolve_backend(self._backend, self._request)
        grid = wide_tasks = four_block_grid = 0
        if self._chosen != "aiter" and self.device.type == "cuda":
            grid, wide_tasks, four_block_grid = _decode_launch_shape(
                self._gpu_index(), q_dtype, kv_dtype, head_dim, num_qo_heads, num_kv_heads, self._use_tensor_cores)
            if self._launches_whole_grid():
                # Captured and compiled runs launch the whole grid (_launch_task_blocks), which
                # takes the narrow shape and the default CUDA-core kernel whatever the plan; the
                # policy then plans for it (and for its blocks taking the tasks in turn:
                # decode_task_blocks, under which plan_host also drops the four-block grid).
                wide_tasks = 0
        upload = self._new_upload(non_blocking)
        # The schedule is built in host scratch; nothing reaches the device before upload.send().
        plan = self._workspace.plan(self.platform, None, kv_lens_h, num_qo_heads, num_kv_heads, head_dim,
                                    decode_grid=grid, upload=upload, page_indptr_host=kv_indptr_h,
                                    decode_wide_tasks=wide_tasks, decode_task_blocks=not self._launches_whole_grid(),
                                    decode_four_block_grid=four_block_grid,
                                    decode_kernel=decode_kernel(self.platform, kv_dtype, self._use_tensor_cores))
        n_pages = int(kv_indptr_h[-1])
        self._check_graph_capacity(paged_kv_indptr_buffer=batch_size + 1, paged_kv_indices_buffer=n_pages,
                                   paged_kv_last_page_len_buffer=batch_size)
        self._kv_indptr, self._kv_indices, self._kv_last_page_len = self._send_index_arrays(
            upload, (kv_indptr_h, "paged_kv_indptr_buffer", indptr),
            (indices[:n_pages], "paged_kv_indices_buffer", None),
            (last_h, "paged_kv_last_page_len_buffer", last_page_len))
        self._plan = plan
        if self._chosen == "aiter":
            self._aiter_qo_indptr = torch.arange(batch_size + 1, dtype=torch.int32).to(self.device)
            self._aiter_plan = aiter_bridge.plan_paged(kv_indptr_h, indices, kv_lens_h,
                                                       torch.ones(batch_size, dtype=torch.int32), self.device)
        self._params = dict(q_dtype=q_dtype, kv_dtype=kv_dtype, num_qo_heads=num_qo_heads,
                            num_kv_heads=num_kv_heads, head_dim=head_dim, page_size=page_size,
                            window_left=window_left, logits_soft_cap=cap, sm_scale=sm_scale)

    begin_forward = plan

    def run(
        self,
        q: torch.Tensor,
        paged_kv_cache: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
        *args,
        q_scale: Optional[float] = None,
        k_scale: Optional[float] = None,
        v_scale: Optional[float] = None,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        enable_pdl: Optional[bool] = None,
        window_left: Optional[int] = None,
        sinks: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Decode attention of q [batch, num_qo_heads, head_dim] against the paged cache."""
        V.check_no_extra_args(args, "run")
        pdl = V.resolve_enable_pdl(enable_pdl, self._pdl_supported)
        V.check_unserved(sinks=sinks)
        plan = self._require_plan()
        p = self._params
        V.check_q(q)
        if q.dtype != p["q_dtype"]:
            raise ValueError(f"q is {q.dtype} but plan() was made for q_data_type={p['q_dtype']}")
        if tuple(q.shape) != (plan.batch_size, p["num_qo_heads"], p["head_dim"]):
            raise ValueError(
                f"q must be [{plan.batch_size}, {p['num_qo_heads']}, {p['head_dim']}] as planned, got {tuple(q.shape)}"
            )
        k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, self._kv_layout)
        V.check_same_device(workspace=self._workspace.buffer, q=q, paged_kv_cache=k_cache)
        geometry = paged_cache_geometry(k_cache, self._kv_layout)
        if geometry != (p["page_size"], p["num_kv_heads"], p["head_dim"]):
            raise ValueError(
                f"paged_kv_cache has page_size/num_kv_heads/head_dim = {geometry} but plan() was made for "
                f"{(p['page_size'], p['num_kv_heads'], p['head_dim'])}"
            )
        if k_cache.dtype != p["kv_dtype"]:
            raise ValueError(f"paged_kv_cache is {k_cache.dtype} but plan() was made for kv_data_type={p['kv_dtype']}")
        wl = p["window_left"] if window_left is None else window_left
        V.check_window_left(wl)
        sm = V.resolve_sm_scale(p["sm_scale"], p["head_dim"], q_scale)
        ks, vs = V.check_scale("k_scale", k_scale), V.check_scale("v_scale", v_scale)
        V.check_out(out, q.shape, q.dtype, q.device)
        out = torch.empty_like(q) if out is None else out
        V.check_lse(lse, q.shape[:2], q.device)
        if lse is None and return_lse:
            lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        self._check_run_options(lse is not None, wl)
        if self._chosen == "aiter":
            aiter_bridge.batch_paged(q, k_cache, v_cache, out, self._aiter_qo_indptr, self._aiter_plan, sm, wl,
                                     p["logits_soft_cap"], ks, vs)
            return (out, lse) if return_lse else out
        ops.batch_decode_paged_run(
            q, k_cache, v_cache, self._kv_indptr, self._kv_indices, self._kv_last_page_len, plan.plan_info,
            plan.partial_o, plan.partial_lse, plan.split_counters, out, lse, V.kv_layout_code(self._kv_layout), wl, sm,
            p["logits_soft_cap"], ks, vs, self._use_tensor_cores, self._launch_task_blocks(plan), pdl)
        return (out, lse) if return_lse else out

    def _launch_task_blocks(self, plan) -> int:
        """The launch size plan() chose (0: the whole persistent grid). A size from the plan is a
        host integer that changes with the batch composition: traced by torch.compile it would be a
        constant the graph guards on (a recompile per new plan), and captured in a CUDA graph it
        would stay the captured plan's for every later plan. Both get the whole grid, which runs
        any plan (its blocks take the tasks in turn); only eager runs get the plan's size (fewer
        blocks, or a block per task past two rounds), and with it the tensor-core kernel's wide
        shape where the plan has at most one task per multiprocessor (a compiled run of a plan
        split for that shape runs it narrow: at batch 1 kv 16k, 1024 rows per split on the whole
        narrow grid measured 27.1 us against 26.4-27.0 for the narrow policy's 512, H200,
        2026-12-03, before the wide shape existed)."""
        if torch.compiler.is_compiling():
            self._runs_compiled = True  # a side effect the compiled code replays: later plans see it
            return 0
        if self._use_cuda_graph:
            return 0
        return plan.task_blocks

    def _launches_whole_grid(self) -> bool:
        """Whether run() launches the whole persistent grid whatever the plan: wrappers made for
        CUDA graphs, and wrappers whose run() has been compiled (a plan made before the first
        compiled run is made for eager launches; it runs correctly on the grid all the same)."""
        return self._use_cuda_graph or self._runs_compiled

    def run_return_lse(self, q, paged_kv_cache, *args, **kwargs):
        kwargs["return_lse"] = True
        return self.run(q, paged_kv_cache, *args, **kwargs)

    def forward(self, q, paged_kv_cache, pos_encoding_mode="NONE", q_scale=None, k_scale=None, v_scale=None,
                window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None):
        """Deprecated: options given here replace the planned ones, then run()."""
        self._forward_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, paged_kv_cache, q_scale=q_scale, k_scale=k_scale, v_scale=v_scale)

    def forward_return_lse(self, q, paged_kv_cache, pos_encoding_mode="NONE", q_scale=None, k_scale=None,
                           v_scale=None, window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None,
                           rope_theta=None):
        """Deprecated: as forward(), returning (out, lse)."""
        self._forward_options(pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, paged_kv_cache, q_scale=q_scale, k_scale=k_scale, v_scale=v_scale, return_lse=True)

    def _forward_options(self, pos_encoding_mode, window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta):
        self._require_plan()
        V.check_pos_encoding_mode(pos_encoding_mode)
        V.check_rope_args(rope_scale, rope_theta)
        V.check_window_left(window_left)
        self._params.update(window_left=window_left, logits_soft_cap=V.check_soft_cap(logits_soft_cap),
                            sm_scale=sm_scale)
