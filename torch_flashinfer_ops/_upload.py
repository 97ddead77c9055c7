"""The host-to-device traffic of one plan(): the schedule and the index arrays, moved together.

Each host-to-device copy costs the host a pinned-memory allocation, a copy launch and (for
arrays without a fixed home) a device allocation. plan() moves up to five int32 arrays, so it
gathers them into one pinned block of the caching host allocator (kept until the copies have
run, so the host scratch they came from is free again at once and nothing waits for the GPU)
and sends that block with one copy for the arrays that get a fresh device home (views of one
device tensor) and one copy per array that has a fixed home (the wrapper's plan buffer, or a
CUDA-graph buffer). Arrays already on the workspace's device never go up from the host."""
from __future__ import annotations

from typing import List, Optional

import torch

from . import _C


class Upload:
    """Collects (source, destination) pairs, then sends them with `send` (csrc/cpu/upload.cpp).

    source: an int32-convertible 1-D tensor on the host or on the workspace's device.
    destination: None (the result gets a fresh device home) or a device tensor of the source's
    length (a fixed home: the plan buffer, a CUDA-graph buffer prefix)."""

    def __init__(self, device: torch.device, non_blocking: bool):
        self.device = device
        self.non_blocking = non_blocking
        self._sources: List[torch.Tensor] = []
        self._destinations: List[Optional[torch.Tensor]] = []

    def add(self, source: torch.Tensor, destination: Optional[torch.Tensor] = None) -> int:
        """Queues one array; its result is send()'s entry at the returned index (send() refuses a
        destination of another length than its source)."""
        self._sources.append(source)
        self._destinations.append(destination)
        return len(self._sources) - 1

    def send(self) -> List[torch.Tensor]:
        """The results, in the order of add(): destinations, or the arrays' device copies."""
        results = _C.upload(self._sources, self._destinations, self.device, self.non_blocking,
                            self.device.type == "cuda")
        self._sources, self._destinations = [], []
        return results
