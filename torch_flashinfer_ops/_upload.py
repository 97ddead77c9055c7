"""The host-to-device traffic of one plan(): the schedule and the index arrays, moved together.

Each host-to-device copy costs the host a pinned-memory allocation, a copy launch and (for
arrays without a fixed home) a device allocation. plan() moves up to five int32 arrays, so it
gathers them into one pinned block of the caching host allocator (kept until the copies have
run, so the host scratch they came from is free again at once and nothing waits for the GPU)
and sends that block with one copy for the arrays that get a fresh device home (views of one
device tensor) and one copy per array that has a fixed home (the workspace's plan region, or a
CUDA-graph buffer). Arrays already on the workspace's device never go up from the host."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

# Arrays that share one device tensor start on 128-byte boundaries, as separate allocations
# would, so a kernel's wide loads of one array stay aligned.
_ALIGN_ELEMS = 32


def _aligned(n: int) -> int:
    return (n + _ALIGN_ELEMS - 1) // _ALIGN_ELEMS * _ALIGN_ELEMS


class Upload:
    """Collects (source, destination) pairs, then sends them with `send`.

    source: an int32-convertible 1-D tensor on the host or on the workspace's device.
    destination: None (the result gets a fresh device home) or a device tensor of the source's
    length (a fixed home: the plan region, a CUDA-graph buffer prefix)."""

    def __init__(self, device: torch.device, non_blocking: bool):
        self.device = device
        self.non_blocking = non_blocking
        self._items: List[Tuple[torch.Tensor, Optional[torch.Tensor]]] = []

    def add(self, source: torch.Tensor, destination: Optional[torch.Tensor] = None) -> int:
        """Queues one array; its result is send()'s entry at the returned index."""
        if destination is not None and destination.numel() != source.numel():
            raise ValueError(f"upload: destination holds {destination.numel()} entries, source {source.numel()}")
        self._items.append((source, destination))
        return len(self._items) - 1

    def send(self) -> List[torch.Tensor]:
        """The results, in the order of add(): destinations, or the arrays' device copies."""
        results: List[Optional[torch.Tensor]] = [None] * len(self._items)
        staged_free, staged_fixed = [], []  # host sources headed for a fresh home / a fixed one
        for i, (source, destination) in enumerate(self._items):
            if self.device.type != "cuda" or source.device.type != "cpu":
                # On a GPU already (or a host workspace): copied into the fixed home, or used as
                # is when it is on the workspace's device.
                source = source.to(torch.int32).contiguous()
                if destination is None:
                    results[i] = source.to(self.device)
                else:
                    results[i] = destination.copy_(source, non_blocking=self.non_blocking)
            else:
                (staged_free if destination is None else staged_fixed).append(i)
        if staged_free or staged_fixed:
            self._send_staged(staged_free, staged_fixed, results)
        self._items = []
        return results

    def _send_staged(self, free: List[int], fixed: List[int], results: list) -> None:
        sizes = {i: self._items[i][0].numel() for i in free + fixed}
        offsets, total = {}, 0
        for i in free + fixed:  # the fresh-home arrays first: they go up as one prefix
            offsets[i] = total
            total += _aligned(sizes[i])
        free_total = offsets[fixed[0]] if fixed else total
        staged = torch.empty(total, dtype=torch.int32, pin_memory=True)
        staged_np = staged.numpy()  # numpy's slice assignment costs the host a fraction of a tensor copy_'s
        for i in free + fixed:
            staged_np[offsets[i] : offsets[i] + sizes[i]] = self._items[i][0].numpy()
        if free:
            block = staged[:free_total].to(self.device, non_blocking=self.non_blocking)
            for i in free:
                results[i] = block[offsets[i] : offsets[i] + sizes[i]]
        for i in fixed:
            destination = self._items[i][1]
            results[i] = destination.copy_(staged[offsets[i] : offsets[i] + sizes[i]],
                                           non_blocking=self.non_blocking)
