"""Prefill attention: single request, and batches over a paged or a ragged KV cache.

Shapes (NHD layout; HND swaps the token and head axes of k/v):
    q            [qo_len, num_qo_heads, head_dim]   (batch: all requests concatenated)
    k, v         [kv_len, num_kv_heads, head_dim]
    paged cache  [num_pages, 2, page_size, num_kv_heads, head_dim] or (k_cache, v_cache)
    out          like q (dtype o_dtype, default q's)
    lse          float32 [qo_len, num_qo_heads], base-2 log-sum-exp of the scaled logits
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch

from . import _validation as V
from . import aiter_bridge
from ._mask import check_packed_mask, pack_custom_mask
from ._ops import ops, prefill_grid_blocks
from ._wrapper_base import (
    BatchWrapperBase,
    paged_cache_geometry,
    paged_kv_lens,
    ragged_kv_lens,
    parse_dtype,
    unpack_paged_kv_cache,
)
from .capabilities import Request, platform_of, resolve_backend, resolve_call

_OUT_DTYPES = (torch.float16, torch.bfloat16)


def _options(causal, window_left, logits_soft_cap, masked, return_lse, kv_layout):
    opts = set()
    if causal:
        opts.add("causal")
    if masked:
        opts.add("custom_mask")
    if window_left >= 0:
        opts.add("sliding_window")
    if logits_soft_cap:
        opts.add("logits_soft_cap")
    if return_lse:
        opts.add("return_lse")
    if kv_layout == "HND":
        opts.add("kv_layout_HND")
    return frozenset(opts)


def _make_outputs(q, out, lse, return_lse, o_dtype=None):
    if out is None and lse is None and not return_lse and o_dtype is None and q.is_contiguous():
        return torch.empty_like(q), None  # the common call, without the checks below (host time)
    o_dtype = o_dtype or q.dtype
    V.check_out(out, q.shape, o_dtype, q.device)
    if out is None:
        # empty_like is the cheaper allocation on the host (about a third of empty's cost).
        same = o_dtype == q.dtype and q.is_contiguous()
        out = torch.empty_like(q) if same else torch.empty(q.shape, dtype=o_dtype, device=q.device)
    lse_shape = q.shape[:-1]
    V.check_lse(lse, lse_shape, q.device)
    if lse is None and return_lse:
        lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    return out, lse


def single_prefill_with_kv_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale_q: Optional[torch.Tensor] = None,
    scale_k: Optional[torch.Tensor] = None,
    scale_v: Optional[torch.Tensor] = None,
    o_dtype: Optional[torch.dtype] = None,
    custom_mask: Optional[torch.Tensor] = None,
    packed_custom_mask: Optional[torch.Tensor] = None,
    causal: bool = False,
    kv_layout: str = "NHD",
    pos_encoding_mode: str = "NONE",
    use_fp16_qk_reduction: bool = False,
    sm_scale: Optional[float] = None,
    window_left: int = -1,
    logits_soft_cap: Optional[float] = None,
    rope_scale: Optional[float] = None,
    rope_theta: Optional[float] = None,
    backend: str = "auto",
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Prefill attention of one request: softmax(q k^T * sm_scale) v with GQA.

    Causal masking aligns the query block to the end of the kv sequence (query i sees
    kv positions <= i + kv_len - qo_len). A custom mask ([qo_len, kv_len] bool, True =
    attend, or its packed form) replaces the causal mask. Returns out, or (out, lse).
    """
    # The common case of each check is tested inline first: a short prefill's call costs the host
    # about as long as its kernel runs (docs/kernel_notes.md), so these lines are per-call cost.
    if scale_q is not None or scale_k is not None or scale_v is not None:
        V.check_unserved(scale_q=scale_q, scale_k=scale_k, scale_v=scale_v)
    if pos_encoding_mode != "NONE":
        V.check_pos_encoding_mode(pos_encoding_mode)
    if use_fp16_qk_reduction:
        V.check_fp16_qk_reduction(use_fp16_qk_reduction)
    if rope_scale is not None or rope_theta is not None:
        V.check_rope_args(rope_scale, rope_theta)
    layout = V.kv_layout_code(kv_layout)
    V.check_q(q)
    V.check_kv(k, v)
    if k.dim() != 3:
        raise ValueError(f"k must be 3-D, got shape {tuple(k.shape)}")
    device = q.device
    if k.device != device or v.device != device or custom_mask is not None or packed_custom_mask is not None:
        device = V.check_same_device(q=q, k=k, v=v, custom_mask=custom_mask, packed_custom_mask=packed_custom_mask)
    kv_len, num_kv_heads = (k.shape[0], k.shape[1]) if kv_layout == "NHD" else (k.shape[1], k.shape[0])
    qo_len, num_qo_heads, head_dim = q.shape
    V.check_head_dim("k", k.shape[2], head_dim)
    V.check_heads(num_qo_heads, num_kv_heads)
    V.check_window_left(window_left)
    cap = V.check_soft_cap(logits_soft_cap)
    if o_dtype is not None and o_dtype not in _OUT_DTYPES:
        raise ValueError(f"o_dtype must be float16 or bfloat16, got {o_dtype}")
    if custom_mask is not None:
        if tuple(custom_mask.shape) not in ((qo_len, kv_len), (qo_len * kv_len,)):
            raise ValueError(f"custom_mask must be [qo_len, kv_len] = [{qo_len}, {kv_len}], got {tuple(custom_mask.shape)}")
        packed_custom_mask, _ = pack_custom_mask(custom_mask, torch.tensor([qo_len]), torch.tensor([kv_len]))
    elif packed_custom_mask is not None:
        check_packed_mask(packed_custom_mask, torch.tensor([qo_len]), torch.tensor([kv_len]))
    masked = packed_custom_mask is not None
    chosen = resolve_call(backend, "single_prefill", platform_of(device), q.dtype, k.dtype, head_dim,
                          _options(causal, window_left, cap, masked, return_lse, kv_layout))
    out, lse = _make_outputs(q, None, None, return_lse, o_dtype)
    if chosen == "aiter":
        aiter_bridge.single_prefill(q, k, v, out, lse, causal, V.resolve_sm_scale(sm_scale, head_dim))
    else:
        ops.single_prefill(q, k, v, out, lse, packed_custom_mask, layout, causal, window_left,
                           V.resolve_sm_scale(sm_scale, head_dim), cap, 1.0, 1.0)
    return (out, lse) if return_lse else out


@functools.lru_cache(maxsize=None)
def _prefill_grid(device_index: int, q_dtype, head_dim, paged, transform_scores, masked):
    """prefill_grid_blocks per GPU and configuration: an occupancy query, asked once."""
    with torch.cuda.device(device_index):
        return prefill_grid_blocks(q_dtype, head_dim, paged, transform_scores, masked)


class _PrefillWrapperBase(BatchWrapperBase):
    """plan()/run() bookkeeping shared by the paged and the ragged wrapper."""

    _op_name = ""

    def _plan_common(self, qo_indptr_h, kv_lens_h, num_qo_heads, num_kv_heads, head_dim_qk, head_dim_vo,
                     custom_mask, packed_custom_mask, causal, pos_encoding_mode, use_fp16_qk_reduction,
                     window_left, logits_soft_cap, sm_scale, rope_scale, rope_theta, q_data_type,
                     kv_data_type, page_size, unserved):
        V.check_unserved(**unserved)
        V.check_pos_encoding_mode(pos_encoding_mode)
        V.check_fp16_qk_reduction(use_fp16_qk_reduction)
        V.check_rope_args(rope_scale, rope_theta)
        if head_dim_vo is not None and head_dim_vo != head_dim_qk:
            raise ValueError(f"head_dim_vo ({head_dim_vo}) different from head_dim_qk ({head_dim_qk}) is not served")
        V.check_heads(num_qo_heads, num_kv_heads)
        V.check_window_left(window_left)
        cap = V.check_soft_cap(logits_soft_cap)
        q_dtype = parse_dtype(q_data_type, "q_data_type")
        kv_dtype = parse_dtype(kv_data_type, "kv_data_type") or q_dtype
        batch_size = qo_indptr_h.numel() - 1
        V.check_indptr(qo_indptr_h, "qo_indptr")
        qo_lens = qo_indptr_h[1:] - qo_indptr_h[:-1]
        mask_indptr = None
        if custom_mask is not None:
            packed_custom_mask, mask_indptr = pack_custom_mask(custom_mask, qo_lens, kv_lens_h)
        elif packed_custom_mask is not None:
            mask_indptr = check_packed_mask(packed_custom_mask, qo_lens, kv_lens_h)
        masked = packed_custom_mask is not None
        self._request = Request(self._op_name, self.platform, q_dtype, kv_dtype, head_dim_qk, page_size,
                                _options(causal, window_left, cap, masked, False, self._kv_layout))
        self._chosen = resolve_backend(self._backend, self._request)
        return qo_indptr_h, batch_size, q_dtype, kv_dtype, cap, packed_custom_mask, mask_indptr

    def _work_lists(self, q_dtype, head_dim, paged, causal, window_left, cap, packed):
        """plan()'s work-list arguments: on a GPU served by our kernels, the persistent grid's
        blocks and what the lists' costs depend on (a custom mask replaces the causal bound)."""
        if self._chosen == "aiter" or self.device.type != "cuda":
            return {}
        grid = _prefill_grid(self._gpu_index(), q_dtype, head_dim, paged, bool(cap), packed is not None)
        return {"work_lists": grid, "causal": bool(causal) and packed is None, "window_left": window_left}

    def _send_arrays_and_mask(self, upload, arrays, packed, mask_indptr, non_blocking):
        """The index arrays' run-time copies (_send_index_arrays); with a custom mask, its
        mask_indptr goes up in the same upload and its packed bits (uint8) on their own."""
        if packed is None:
            self._packed_mask = self._mask_indptr = None
            return self._send_index_arrays(upload, *arrays)
        *copies, self._mask_indptr = self._send_index_arrays(upload, *arrays, (mask_indptr, "mask_indptr_buf", None))
        self._packed_mask = self._copy_index_array(packed, "custom_mask_buf", non_blocking)
        return copies

    def _store_params(self, **params):
        self._params = params

    def _check_q(self, q):
        p = self._params
        V.check_q(q)
        if q.dtype != p["q_dtype"]:
            raise ValueError(f"q is {q.dtype} but plan() was made for q_data_type={p['q_dtype']}")
        if q.shape[0] != self._plan.total_qo or q.shape[1] != p["num_qo_heads"] or q.shape[2] != p["head_dim"]:
            raise ValueError(
                f"q must be [{self._plan.total_qo}, {p['num_qo_heads']}, {p['head_dim']}] as planned, got {tuple(q.shape)}"
            )
        if q.device != self.device:
            raise ValueError(f"q is on {q.device} but the workspace is on {self.device}")

    def _scales(self, q_scale, k_scale, v_scale):
        k = V.check_scale("k_scale", k_scale)
        v = V.check_scale("v_scale", v_scale)
        sm = V.resolve_sm_scale(self._params["sm_scale"], self._params["head_dim"], q_scale)
        return sm, k, v


class BatchPrefillWithPagedKVCacheWrapper(_PrefillWrapperBase):
    """Batched prefill/append attention over a paged KV cache (plan once, run per layer)."""

    _op_name = "batch_prefill_paged"

    def __init__(
        self,
        float_workspace_buffer: torch.Tensor,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        qo_indptr_buf: Optional[torch.Tensor] = None,
        paged_kv_indptr_buf: Optional[torch.Tensor] = None,
        paged_kv_indices_buf: Optional[torch.Tensor] = None,
        paged_kv_last_page_len_buf: Optional[torch.Tensor] = None,
        custom_mask_buf: Optional[torch.Tensor] = None,
        mask_indptr_buf: Optional[torch.Tensor] = None,
        backend: str = "auto",
        jit_args=None,
        jit_kwargs=None,
    ) -> None:
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, backend, jit_args, jit_kwargs,
                         qo_indptr_buf=qo_indptr_buf, paged_kv_indptr_buf=paged_kv_indptr_buf,
                         paged_kv_indices_buf=paged_kv_indices_buf,
                         paged_kv_last_page_len_buf=paged_kv_last_page_len_buf,
                         custom_mask_buf=custom_mask_buf, mask_indptr_buf=mask_indptr_buf)

    def plan(
        self,
        qo_indptr: torch.Tensor,
        paged_kv_indptr: torch.Tensor,
        paged_kv_indices: torch.Tensor,
        paged_kv_last_page_len: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim_qk: int,
        page_size: int,
        head_dim_vo: Optional[int] = None,
        custom_mask: Optional[torch.Tensor] = None,
        packed_custom_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        pos_encoding_mode: str = "NONE",
        use_fp16_qk_reduction: bool = False,
        sm_scale: Optional[float] = None,
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        q_data_type: Union[str, torch.dtype] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        non_blocking: bool = True,
        prefix_len_ptr: Optional[torch.Tensor] = None,
        token_pos_in_items_ptr: Optional[torch.Tensor] = None,
        token_pos_in_items_len: int = 0,
        max_item_len_ptr: Optional[torch.Tensor] = None,
        seq_lens: Optional[torch.Tensor] = None,
        seq_lens_q: Optional[torch.Tensor] = None,
        block_tables: Optional[torch.Tensor] = None,
        max_token_per_sequence: Optional[int] = None,
        max_sequence_kv: Optional[int] = None,
    ) -> None:
        """Schedules the batch: reads the index arrays on the host once, writes the
        schedule into the workspace. qo_indptr [batch+1], paged_kv_indptr [batch+1],
        paged_kv_indices [paged_kv_indptr[-1]], paged_kv_last_page_len [batch]."""
        kv_indptr_h, last_h, qo_h = V.host_int32s((paged_kv_indptr, "paged_kv_indptr"),
                                                  (paged_kv_last_page_len, "paged_kv_last_page_len"),
                                                  (qo_indptr, "qo_indptr"))
        batch_size = qo_h.numel() - 1
        kv_lens_h = paged_kv_lens(kv_indptr_h, paged_kv_indices, last_h, batch_size, page_size)
        unserved = dict(prefix_len_ptr=prefix_len_ptr, token_pos_in_items_ptr=token_pos_in_items_ptr,
                        token_pos_in_items_len=token_pos_in_items_len or None,
                        max_item_len_ptr=max_item_len_ptr, seq_lens=seq_lens, seq_lens_q=seq_lens_q,
                        block_tables=block_tables)
        qo_indptr_h, batch_size, q_dtype, kv_dtype, cap, packed, mask_indptr = self._plan_common(
            qo_h, kv_lens_h, num_qo_heads, num_kv_heads, head_dim_qk, head_dim_vo, custom_mask,
            packed_custom_mask, causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
            logits_soft_cap, sm_scale, rope_scale, rope_theta, q_data_type, kv_data_type, page_size, unserved)
        n_pages = int(kv_indptr_h[-1])
        self._check_graph_capacity(
            qo_indptr_buf=batch_size + 1, paged_kv_indptr_buf=batch_size + 1,
            paged_kv_indices_buf=n_pages, paged_kv_last_page_len_buf=batch_size,
            **({"custom_mask_buf": packed.numel(), "mask_indptr_buf": batch_size + 1} if packed is not None else {}))
        upload = self._new_upload(non_blocking)
        plan = self._workspace.plan(self.platform, qo_indptr_h, kv_lens_h, num_qo_heads, num_kv_heads,
                                    head_dim_qk, upload=upload,
                                    **self._work_lists(q_dtype, head_dim_qk, True, causal, window_left, cap, packed))
        self._qo_indptr, self._kv_indptr, self._kv_indices, self._kv_last_page_len = self._send_arrays_and_mask(
            upload, ((qo_indptr_h, "qo_indptr_buf", qo_indptr),
                     (kv_indptr_h, "paged_kv_indptr_buf", paged_kv_indptr),
                     (paged_kv_indices[:n_pages], "paged_kv_indices_buf", None),
                     (last_h, "paged_kv_last_page_len_buf", paged_kv_last_page_len)),
            packed, mask_indptr, non_blocking)
        self._plan = plan
        if self._chosen == "aiter":
            self._aiter_plan = aiter_bridge.plan_paged(kv_indptr_h, paged_kv_indices, kv_lens_h,
                                                       qo_indptr_h[1:] - qo_indptr_h[:-1], self.device)
        self._store_params(q_dtype=q_dtype, kv_dtype=kv_dtype, num_qo_heads=num_qo_heads,
                           num_kv_heads=num_kv_heads, head_dim=head_dim_qk, page_size=page_size,
                           causal=causal, window_left=window_left, logits_soft_cap=cap, sm_scale=sm_scale)

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
        """Attention of q [total_qo, num_qo_heads, head_dim] against the paged cache."""
        V.check_no_extra_args(args, "run")
        pdl = V.resolve_enable_pdl(enable_pdl, self._pdl_supported)
        V.check_unserved(sinks=sinks)
        plan = self._require_plan()
        p = self._params
        self._check_q(q)
        k_cache, v_cache = unpack_paged_kv_cache(paged_kv_cache, self._kv_layout)
        V.check_same_device(q=q, paged_kv_cache=k_cache)
        page_size, num_kv_heads, head_dim = paged_cache_geometry(k_cache, self._kv_layout)
        if (page_size, num_kv_heads, head_dim) != (p["page_size"], p["num_kv_heads"], p["head_dim"]):
            raise ValueError(
                f"paged_kv_cache has page_size/num_kv_heads/head_dim = {(page_size, num_kv_heads, head_dim)} "
                f"but plan() was made for {(p['page_size'], p['num_kv_heads'], p['head_dim'])}"
            )
        if k_cache.dtype != p["kv_dtype"]:
            raise ValueError(f"paged_kv_cache is {k_cache.dtype} but plan() was made for kv_data_type={p['kv_dtype']}")
        wl = p["window_left"] if window_left is None else window_left
        V.check_window_left(wl)
        sm, ks, vs = self._scales(q_scale, k_scale, v_scale)
        out, lse = _make_outputs(q, out, lse, return_lse)
        self._check_run_options(lse is not None, wl)
        if self._chosen == "aiter":
            aiter_bridge.batch_paged(q, k_cache, v_cache, out, self._qo_indptr, self._aiter_plan, sm, wl,
                                     p["logits_soft_cap"], ks, vs)
            return (out, lse) if return_lse else out
        ops.batch_prefill_paged_run(
            q, k_cache, v_cache, self._qo_indptr, self._kv_indptr, self._kv_indices, self._kv_last_page_len,
            plan.plan_info, plan.partial_o, plan.partial_lse, out, lse, self._packed_mask, self._mask_indptr,
            V.kv_layout_code(self._kv_layout), p["causal"], wl, sm, p["logits_soft_cap"], ks, vs, pdl)
        return (out, lse) if return_lse else out

    def run_return_lse(self, q, paged_kv_cache, *args, **kwargs):
        kwargs["return_lse"] = True
        return self.run(q, paged_kv_cache, *args, **kwargs)

    def forward(self, q, paged_kv_cache, causal=False, pos_encoding_mode="NONE", use_fp16_qk_reduction=False,
                k_scale=None, v_scale=None, window_left=-1, logits_soft_cap=None, sm_scale=None,
                rope_scale=None, rope_theta=None):
        """Deprecated: options given here replace the planned ones, then run()."""
        self._forward_options(causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
                              logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, paged_kv_cache, k_scale=k_scale, v_scale=v_scale)

    def forward_return_lse(self, q, paged_kv_cache, causal=False, pos_encoding_mode="NONE",
                           use_fp16_qk_reduction=False, k_scale=None, v_scale=None, window_left=-1,
                           logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None):
        """Deprecated: as forward(), returning (out, lse)."""
        self._forward_options(causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
                              logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, paged_kv_cache, k_scale=k_scale, v_scale=v_scale, return_lse=True)

    def _forward_options(self, causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
                         logits_soft_cap, sm_scale, rope_scale, rope_theta):
        self._require_plan()
        V.check_pos_encoding_mode(pos_encoding_mode)
        V.check_fp16_qk_reduction(use_fp16_qk_reduction)
        V.check_rope_args(rope_scale, rope_theta)
        V.check_window_left(window_left)
        self._params.update(causal=causal, window_left=window_left,
                            logits_soft_cap=V.check_soft_cap(logits_soft_cap), sm_scale=sm_scale)


class BatchPrefillWithRaggedKVCacheWrapper(_PrefillWrapperBase):
    """Batched prefill attention over ragged (concatenated, unpaged) K/V."""

    _op_name = "batch_prefill_ragged"

    def __init__(
        self,
        float_workspace_buffer: torch.Tensor,
        kv_layout: str = "NHD",
        use_cuda_graph: bool = False,
        qo_indptr_buf: Optional[torch.Tensor] = None,
        kv_indptr_buf: Optional[torch.Tensor] = None,
        custom_mask_buf: Optional[torch.Tensor] = None,
        mask_indptr_buf: Optional[torch.Tensor] = None,
        backend: str = "auto",
        jit_args=None,
        jit_kwargs=None,
    ) -> None:
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, backend, jit_args, jit_kwargs,
                         qo_indptr_buf=qo_indptr_buf, kv_indptr_buf=kv_indptr_buf,
                         custom_mask_buf=custom_mask_buf, mask_indptr_buf=mask_indptr_buf)

    def plan(
        self,
        qo_indptr: torch.Tensor,
        kv_indptr: torch.Tensor,
        num_qo_heads: int,
        num_kv_heads: int,
        head_dim_qk: int,
        head_dim_vo: Optional[int] = None,
        custom_mask: Optional[torch.Tensor] = None,
        packed_custom_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        pos_encoding_mode: str = "NONE",
        use_fp16_qk_reduction: bool = False,
        window_left: int = -1,
        logits_soft_cap: Optional[float] = None,
        sm_scale: Optional[float] = None,
        rope_scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        q_data_type: Union[str, torch.dtype] = "float16",
        kv_data_type: Optional[Union[str, torch.dtype]] = None,
        non_blocking: bool = True,
        prefix_len_ptr: Optional[torch.Tensor] = None,
        token_pos_in_items_ptr: Optional[torch.Tensor] = None,
        token_pos_in_items_len: int = 0,
        max_item_len_ptr: Optional[torch.Tensor] = None,
    ) -> None:
        """Schedules the batch. qo_indptr and kv_indptr [batch+1] index the concatenated q and k/v."""
        kv_indptr_h, qo_h = V.host_int32s((kv_indptr, "kv_indptr"), (qo_indptr, "qo_indptr"))
        kv_lens_h = ragged_kv_lens(kv_indptr_h, qo_h.numel() - 1, "kv_indptr")
        unserved = dict(prefix_len_ptr=prefix_len_ptr, token_pos_in_items_ptr=token_pos_in_items_ptr,
                        token_pos_in_items_len=token_pos_in_items_len or None, max_item_len_ptr=max_item_len_ptr)
        qo_indptr_h, batch_size, q_dtype, kv_dtype, cap, packed, mask_indptr = self._plan_common(
            qo_h, kv_lens_h, num_qo_heads, num_kv_heads, head_dim_qk, head_dim_vo, custom_mask,
            packed_custom_mask, causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
            logits_soft_cap, sm_scale, rope_scale, rope_theta, q_data_type, kv_data_type, None, unserved)
        self._check_graph_capacity(
            qo_indptr_buf=batch_size + 1, kv_indptr_buf=batch_size + 1,
            **({"custom_mask_buf": packed.numel(), "mask_indptr_buf": batch_size + 1} if packed is not None else {}))
        upload = self._new_upload(non_blocking)
        plan = self._workspace.plan(self.platform, qo_indptr_h, kv_lens_h, num_qo_heads, num_kv_heads,
                                    head_dim_qk, upload=upload,
                                    **self._work_lists(q_dtype, head_dim_qk, False, causal, window_left, cap, packed))
        self._qo_indptr, self._kv_indptr = self._send_arrays_and_mask(
            upload, ((qo_indptr_h, "qo_indptr_buf", qo_indptr), (kv_indptr_h, "kv_indptr_buf", kv_indptr)),
            packed, mask_indptr, non_blocking)
        self._plan = plan
        self._total_kv = int(kv_indptr_h[-1])
        self._max_lens = (int((qo_indptr_h[1:] - qo_indptr_h[:-1]).max()) if batch_size else 0,
                          int(kv_lens_h.max()) if batch_size else 0)
        self._store_params(q_dtype=q_dtype, kv_dtype=kv_dtype, num_qo_heads=num_qo_heads,
                           num_kv_heads=num_kv_heads, head_dim=head_dim_qk, causal=causal,
                           window_left=window_left, logits_soft_cap=cap, sm_scale=sm_scale)

    begin_forward = plan

    def run(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *args,
        q_scale: Optional[float] = None,
        k_scale: Optional[float] = None,
        v_scale: Optional[float] = None,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        enable_pdl: Optional[bool] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Attention of q [total_qo, Hq, D] against k/v [total_kv, Hkv, D] (NHD)."""
        V.check_no_extra_args(args, "run")
        pdl = V.resolve_enable_pdl(enable_pdl, self._pdl_supported)
        plan = self._require_plan()
        p = self._params
        self._check_q(q)
        V.check_kv(k, v)
        V.check_same_device(q=q, k=k, v=v)
        if k.dim() != 3:
            raise ValueError(f"k must be 3-D, got shape {tuple(k.shape)}")
        total_kv, num_kv_heads = (k.shape[0], k.shape[1]) if self._kv_layout == "NHD" else (k.shape[1], k.shape[0])
        if num_kv_heads != p["num_kv_heads"] or k.shape[2] != p["head_dim"] or total_kv != self._total_kv:
            raise ValueError(
                f"k must hold {self._total_kv} tokens of {p['num_kv_heads']} heads x {p['head_dim']} as planned, "
                f"got {tuple(k.shape)} ({self._kv_layout})"
            )
        if k.dtype != p["kv_dtype"]:
            raise ValueError(f"k is {k.dtype} but plan() was made for kv_data_type={p['kv_dtype']}")
        sm, ks, vs = self._scales(q_scale, k_scale, v_scale)
        out, lse = _make_outputs(q, out, lse, return_lse)
        self._check_run_options(lse is not None, p["window_left"])
        if self._chosen == "aiter":
            aiter_bridge.batch_prefill_ragged(q, k, v, out, lse, self._qo_indptr, self._kv_indptr, *self._max_lens,
                                              p["causal"], sm)
            return (out, lse) if return_lse else out
        ops.batch_prefill_ragged_run(
            q, k, v, self._qo_indptr, self._kv_indptr, plan.plan_info, plan.partial_o, plan.partial_lse,
            out, lse, self._packed_mask, self._mask_indptr, V.kv_layout_code(self._kv_layout), p["causal"],
            p["window_left"], sm, p["logits_soft_cap"], ks, vs, pdl)
        return (out, lse) if return_lse else out

    def run_return_lse(self, q, k, v, *args, **kwargs):
        kwargs["return_lse"] = True
        return self.run(q, k, v, *args, **kwargs)

    def forward(self, q, k, v, causal=False, pos_encoding_mode="NONE", use_fp16_qk_reduction=False,
                window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None):
        """Deprecated: options given here replace the planned ones, then run()."""
        self._forward_options(causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
                              logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, k, v)

    def forward_return_lse(self, q, k, v, causal=False, pos_encoding_mode="NONE", use_fp16_qk_reduction=False,
                           window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None):
        """Deprecated: as forward(), returning (out, lse)."""
        self._forward_options(causal, pos_encoding_mode, use_fp16_qk_reduction, window_left,
                              logits_soft_cap, sm_scale, rope_scale, rope_theta)
        return self.run(q, k, v, return_lse=True)

    _forward_options = BatchPrefillWithPagedKVCacheWrapper._forward_options


single_prefill_with_kv_cache_return_lse = functools.partial(single_prefill_with_kv_cache, return_lse=True)
