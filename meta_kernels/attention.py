"""Fakes of the attention operators: they write into caller-provided outputs."""
import torch


def _check_out(o: torch.Tensor, q: torch.Tensor, op: str) -> None:
    torch._check(o.shape == q.shape, lambda: f"{op}: o must have q's shape")


@torch.library.register_fake("flashinfer::single_prefill")
def single_prefill(q, k, v, o, maybe_lse, packed_custom_mask, kv_layout, causal, window_left, sm_scale,
                   logits_soft_cap, k_scale, v_scale):
    _check_out(o, q, "single_prefill")


@torch.library.register_fake("flashinfer::single_decode")
def single_decode(q, k, v, o, maybe_lse, kv_layout, window_left, sm_scale, logits_soft_cap, k_scale, v_scale,
                  use_tensor_cores):
    _check_out(o, q, "single_decode")


@torch.library.register_fake("flashinfer::batch_prefill_paged_run")
def batch_prefill_paged_run(q, paged_k, paged_v, qo_indptr, kv_indptr, kv_indices, kv_last_page_len, plan_info,
                            partial_o, partial_lse, o, maybe_lse, packed_custom_mask, mask_indptr, kv_layout,
                            causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, enable_pdl=False):
    _check_out(o, q, "batch_prefill_paged_run")


@torch.library.register_fake("flashinfer::batch_prefill_ragged_run")
def batch_prefill_ragged_run(q, k, v, qo_indptr, kv_indptr, plan_info, partial_o, partial_lse, o, maybe_lse,
                             packed_custom_mask, mask_indptr, kv_layout, causal, window_left, sm_scale,
                             logits_soft_cap, k_scale, v_scale, enable_pdl=False):
    _check_out(o, q, "batch_prefill_ragged_run")


@torch.library.register_fake("flashinfer::batch_decode_paged_run")
def batch_decode_paged_run(q, paged_k, paged_v, kv_indptr, kv_indices, kv_last_page_len, plan_info, partial_o,
                           partial_lse, split_counters, o, maybe_lse, kv_layout, window_left, sm_scale,
                           logits_soft_cap, k_scale, v_scale, use_tensor_cores, task_blocks=0, enable_pdl=False):
    _check_out(o, q, "batch_decode_paged_run")
