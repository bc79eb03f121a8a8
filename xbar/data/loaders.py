"""Seeded ``DataLoader`` pairs, so that the shuffling order is reproducible."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from xbar.data.split import DatasetSplit
from xbar.errors import InputError


def loaders(
    split: DatasetSplit, batch_size: int, seed: int, num_workers: int = 0
) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)``: train shuffled by a generator seeded with ``seed``, test in order.

    The same seed gives the same batch order (and, with workers, the same
    augmentation draws, since worker seeds derive from the generator).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}: expected a positive integer")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers={num_workers!r}: expected a non-negative integer")
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        split.train,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    test = DataLoader(split.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train, test
