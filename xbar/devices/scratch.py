"""Reusable scratch tensors for the per-step noise draw of training.

On the CPU a fresh weight-sized temporary is expensive: allocations of a few MB
come straight from the operating system, so every temporary pays its page faults
again (a fresh ``a * b`` costs about three in-place passes). A training step draws
noise for every layer, so the temporaries of that draw (integer codes, table
indices, per-device draws) live in buffers kept per thread and reused by all
layers. Only tensors that never leave the draw may be scratch; results are fresh.
On other devices the caching allocator already reuses memory, so :func:`scratch`
just allocates.
"""

from __future__ import annotations

import math
import threading

import torch

_local = threading.local()


def scratch(slot: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised contiguous tensor for temporary ``slot``, valid until the next request of that slot.

    CPU buffers grow to the largest request and are shared by every caller of the
    same thread; other devices get a fresh tensor.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    pool: dict = _local.__dict__.setdefault("pool", {})
    shape = tuple(shape)
    entry = pool.get((slot, dtype))  # (flat buffer, views of it by shape)
    view = None if entry is None else entry[1].get(shape)
    if view is not None:
        return view
    n = math.prod(shape)
    if entry is None or entry[0].numel() < n:
        entry = (torch.empty(n, dtype=dtype), {})
        pool[(slot, dtype)] = entry
    view = entry[0][:n].view(shape)
    entry[1][shape] = view
    return view


def release() -> None:
    """Free this thread's scratch buffers (they are recreated on demand)."""
    _local.__dict__.pop("pool", None)
