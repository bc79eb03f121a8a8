"""Shared fixtures: fixed seeds, and CUDA skipping."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def gpu_waits(caught) -> list[str]:
    """The warnings of ``torch.cuda.set_sync_debug_mode("warn")`` that report a wait for the GPU
    (not its one-off notice that the mode is a prototype)."""
    return [str(w.message) for w in caught if "called a synchronizing" in str(w.message)]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
