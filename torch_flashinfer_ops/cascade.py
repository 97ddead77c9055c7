"""Merging attention states (cascade building blocks).

A state is (v, s): v [seq_len, num_heads, head_dim] the attention output over some kv
set, s float32 [seq_len, num_heads] its base-2 log-sum-exp. Merging states of disjoint
kv sets gives the state of their union.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._ops import ops


def merge_state(v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merges two states; returns (v_merged, s_merged)."""
    return ops.merge_state(v_a, s_a, v_b, s_b)


def merge_state_in_place(v: torch.Tensor, s: torch.Tensor, v_other: torch.Tensor, s_other: torch.Tensor,
                         mask: Optional[torch.Tensor] = None) -> None:
    """Merges (v_other, s_other) into (v, s); rows where mask (bool [seq_len]) is False stay."""
    ops.merge_state_in_place(v, s, v_other, s_other, mask)


def merge_states(v: torch.Tensor, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merges num_states states: v [seq_len, num_states, num_heads, head_dim],
    s [seq_len, num_states, num_heads]; returns ([seq_len, num_heads, head_dim], [seq_len, num_heads])."""
    return ops.merge_states(v, s)
