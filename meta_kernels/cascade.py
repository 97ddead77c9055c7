"""Fakes of the state-merging operators."""
import torch


@torch.library.register_fake("flashinfer::merge_state")
def merge_state(v_a, s_a, v_b, s_b):
    return torch.empty_like(v_a, memory_format=torch.contiguous_format), torch.empty_like(
        s_a, memory_format=torch.contiguous_format)


@torch.library.register_fake("flashinfer::merge_state_in_place")
def merge_state_in_place(v, s, v_other, s_other, mask):
    return None


@torch.library.register_fake("flashinfer::merge_states")
def merge_states(v, s):
    seq_len, _, num_heads, head_dim = v.shape
    return v.new_empty((seq_len, num_heads, head_dim)), s.new_empty((seq_len, num_heads))
