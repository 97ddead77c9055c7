"""Serving a Hugging Face transformers causal LM through this library.

The model's attention goes through ``paged_attention_forward`` (registered in transformers'
attention-function registry as ``"flashinfer_paged"``), which appends each step's K/V to a
paged cache owned by a ``PagedServingState`` and runs the batch prefill or decode wrapper
that ``begin_step()`` planned. Run the model with ``use_cache=False`` (the paged cache
replaces transformers' own) and pass the state as ``paged_state=``:

    register()
    model = AutoModelForCausalLM.from_config(config, attn_implementation="tfo_paged")
    state = PagedServingState(config, max_pages=1024, page_size=16, device="cuda")
    state.begin_step([len(p) for p in prompts])          # prefill: plan once for all layers
    logits = model(input_ids, position_ids=positions, use_cache=False, paged_state=state).logits
    state.begin_step([1] * len(prompts))                 # each decode step

With ``cuda_graph_batch=B`` the decode steps of a batch of B requests can be captured once in
a CUDA/HIP graph and replayed: every array a decode step reads (the plan, the page table, the
append positions) lives in a buffer of fixed address that ``begin_step()`` rewrites in place.
Capture after a first decode ``begin_step()``; before each replay call ``begin_step()`` and
copy the step's token ids and positions into the captured input tensors.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .decode import BatchDecodeWithPagedKVCacheWrapper
from .page import append_paged_kv_cache, get_batch_indices_positions
from .prefill import BatchPrefillWithPagedKVCacheWrapper

# transformers treats names containing "flash" as flash-attention variants, hence not "flashinfer".
ATTENTION_NAME = "tfo_paged"


class PagedServingState:
    """The paged KV cache of every layer, the page allocator and the step's plan."""

    def __init__(self, config, max_pages: int, page_size: int = 16, device="cpu",
                 dtype: torch.dtype = torch.float16, backend: str = "auto",
                 workspace_bytes: int = 64 << 20, cuda_graph_batch: Optional[int] = None):
        self.num_qo_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_qo_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_qo_heads
        self.page_size = page_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.kv_caches = [
            torch.zeros(max_pages, 2, page_size, self.num_kv_heads, self.head_dim, dtype=dtype, device=self.device)
            for _ in range(config.num_hidden_layers)
        ]
        self._free_pages: List[int] = list(range(max_pages - 1, -1, -1))
        self.pages: List[List[int]] = []
        self.seq_lens: List[int] = []
        self.sm_scale = self.head_dim ** -0.5
        self._prefill = BatchPrefillWithPagedKVCacheWrapper(
            torch.empty(workspace_bytes, dtype=torch.uint8, device=self.device), "NHD", backend=backend)
        self.cuda_graph_batch = cuda_graph_batch
        decode_buffers = {}
        if cuda_graph_batch is not None:
            if cuda_graph_batch < 1:
                raise ValueError(f"cuda_graph_batch must be >= 1, got {cuda_graph_batch}")
            # Fixed-address arrays of the decode step (page table, append slots), sized for the
            # batch and every page of the cache; begin_step() rewrites them in place.
            def fixed(n):
                return torch.zeros(n, dtype=torch.int32, device=self.device)
            self._g_indptr, self._g_indices, self._g_last = (
                fixed(cuda_graph_batch + 1), fixed(max_pages), fixed(cuda_graph_batch))
            self._g_batch_indices, self._g_positions = fixed(cuda_graph_batch), fixed(cuda_graph_batch)
            decode_buffers = dict(use_cuda_graph=True, paged_kv_indptr_buffer=fixed(cuda_graph_batch + 1),
                                  paged_kv_indices_buffer=fixed(max_pages),
                                  paged_kv_last_page_len_buffer=fixed(cuda_graph_batch))
        self._decode = BatchDecodeWithPagedKVCacheWrapper(
            torch.empty(workspace_bytes, dtype=torch.uint8, device=self.device), "NHD", backend=backend,
            **decode_buffers)
        self.wrapper = None

    def begin_step(self, new_tokens: Sequence[int]) -> None:
        """Grows request r by new_tokens[r] tokens (new requests start at 0) and plans the step."""
        while len(self.seq_lens) < len(new_tokens):
            self.seq_lens.append(0)
            self.pages.append([])
        if len(new_tokens) != len(self.seq_lens):
            raise ValueError(f"new_tokens has {len(new_tokens)} entries for {len(self.seq_lens)} requests")
        for r, n in enumerate(new_tokens):
            self.seq_lens[r] += n
            while len(self.pages[r]) * self.page_size < self.seq_lens[r]:
                if not self._free_pages:
                    raise RuntimeError("PagedServingState: out of KV cache pages (raise max_pages)")
                self.pages[r].append(self._free_pages.pop())
        dev = self.device
        kv_indptr = torch.tensor([0] + [sum(len(p) for p in self.pages[: r + 1]) for r in range(len(self.pages))],
                                 dtype=torch.int32)
        kv_indices = torch.tensor([i for p in self.pages for i in p], dtype=torch.int32)
        last = torch.tensor([(n - 1) % self.page_size + 1 for n in self.seq_lens], dtype=torch.int32)
        append_indptr = torch.tensor([0] + list(torch.cumsum(torch.tensor(list(new_tokens)), 0).tolist()),
                                     dtype=torch.int32)
        self.kv_indptr, self.kv_indices, self.kv_last_page_len = kv_indptr.to(dev), kv_indices.to(dev), last.to(dev)
        seq_lens = torch.tensor(self.seq_lens, dtype=torch.int32, device=dev)
        self.batch_indices, self.positions = get_batch_indices_positions(
            append_indptr.to(dev), seq_lens, int(append_indptr[-1]))
        heads = (self.num_qo_heads, self.num_kv_heads, self.head_dim, self.page_size)
        decode = all(n == 1 for n in new_tokens)
        if decode and self.cuda_graph_batch is not None:
            if len(new_tokens) != self.cuda_graph_batch:
                raise ValueError(f"a captured decode step serves cuda_graph_batch = {self.cuda_graph_batch} "
                                 f"requests, got {len(new_tokens)}")
            self._g_indptr.copy_(self.kv_indptr)
            self._g_indices[: self.kv_indices.numel()].copy_(self.kv_indices)
            self._g_last.copy_(self.kv_last_page_len)
            self._g_batch_indices.copy_(self.batch_indices)
            self._g_positions.copy_(self.positions)
            self.kv_indptr, self.kv_indices, self.kv_last_page_len = self._g_indptr, self._g_indices, self._g_last
            self.batch_indices, self.positions = self._g_batch_indices, self._g_positions
        if decode:
            self._decode.plan(kv_indptr, kv_indices, last, *heads, sm_scale=self.sm_scale,
                              q_data_type=self.dtype, kv_data_type=self.dtype)
            self.wrapper = self._decode
        else:
            self._prefill.plan(append_indptr, kv_indptr, kv_indices, last, *heads, causal=True,
                               sm_scale=self.sm_scale, q_data_type=self.dtype, kv_data_type=self.dtype)
            self.wrapper = self._prefill


def paged_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: Optional[torch.Tensor], scaling: Optional[float] = None,
                            dropout: float = 0.0, paged_state: Optional[PagedServingState] = None, **kwargs):
    """transformers attention function: query [B, Hq, S, D], key/value [B, Hkv, S, D] of this step.

    The batch's requests each bring S new tokens (B*S rows, request-major), as planned by
    paged_state.begin_step(); the causal structure comes from the plan, not attention_mask."""
    state = paged_state
    if state is None:
        raise ValueError(f"attn_implementation={ATTENTION_NAME!r} needs paged_state=PagedServingState(...)")
    if dropout:
        raise ValueError("paged attention serves inference only (dropout must be 0)")
    if scaling is not None and abs(scaling - state.sm_scale) > 1e-12 * state.sm_scale:
        raise ValueError(f"scaling {scaling} differs from the planned sm_scale {state.sm_scale}")
    batch, num_qo_heads, steps, head_dim = query.shape
    q = query.transpose(1, 2).reshape(batch * steps, num_qo_heads, head_dim).to(state.dtype)
    k = key.transpose(1, 2).reshape(batch * steps, -1, head_dim).to(state.dtype)
    v = value.transpose(1, 2).reshape(batch * steps, -1, head_dim).to(state.dtype)
    cache = state.kv_caches[module.layer_idx]
    append_paged_kv_cache(k, v, state.batch_indices, state.positions, cache, state.kv_indices, state.kv_indptr,
                          state.kv_last_page_len)
    out = state.wrapper.run(q, cache)
    return out.view(batch, steps, num_qo_heads, head_dim).to(query.dtype), None


def register() -> None:
    """Registers ``"tfo_paged"`` with transformers (attention and mask registries)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
    try:  # the plan carries the causal structure: no mask is built
        from transformers.masking_utils import AttentionMaskInterface

        AttentionMaskInterface.register(ATTENTION_NAME, lambda *args, **kwargs: None)
    except ImportError:
        pass
