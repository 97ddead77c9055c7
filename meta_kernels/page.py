"""Fakes of the paged-cache operators."""
import torch


@torch.library.register_fake("flashinfer::append_paged_kv_cache")
def append_paged_kv_cache(append_key, append_value, batch_indices, positions, paged_k_cache, paged_v_cache,
                          kv_indices, kv_indptr, kv_last_page_len, kv_layout, k_scale, v_scale, enable_pdl=False):
    return None


@torch.library.register_fake("flashinfer::get_batch_indices_positions")
def get_batch_indices_positions(append_indptr, seq_lens, nnz):
    return append_indptr.new_empty((nnz,)), append_indptr.new_empty((nnz,))


@torch.library.register_fake("flashinfer::get_seq_lens")
def get_seq_lens(kv_indptr, kv_last_page_len, page_size):
    return kv_last_page_len.new_empty(kv_last_page_len.shape)
