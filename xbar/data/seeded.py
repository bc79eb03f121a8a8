"""Per-sample seeded access to a dataset, so that augmentation is a function of the seed.

Random augmentation (torchvision's ``RandomCrop``, ``RandomHorizontalFlip``...) draws
from the global random number generators. :class:`SeededSamples` reads a batch of
``(index, seed)`` pairs, each sample with the global torch (CPU), Python and NumPy
generators seeded by its own seed, and puts the generators' previous states back after
the batch. An augmented sample therefore depends only on ``(index, seed)`` - not on
what ran before, on which worker process read it, or on whether the run was resumed -
and the global generators go on as if no data had been read.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate


def seed_global_rngs(seed: int) -> None:
    """Seed the global torch CPU, ``random`` and NumPy generators with ``seed``.

    Only the CPU generator of torch (``torch.manual_seed`` would reseed the CUDA ones
    too); augmentation runs on the CPU.
    """
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """The global torch CPU, ``random`` and NumPy states before the block are restored after it."""
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


class SeededSamples(Dataset):
    """``dataset`` read in batches of ``(index, seed)`` pairs.

    Item ``[(i1, s1), (i2, s2), ...]`` is the collated batch of ``dataset[i1]`` read
    after :func:`seed_global_rngs` ``(s1)``, ``dataset[i2]`` after ``(s2)``, ...; the
    global states are saved and restored once per batch (:func:`preserved_global_rngs`).
    Use it with ``DataLoader(SeededSamples(ds), batch_size=None, sampler=batches)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, pairs: Sequence[tuple[int, int]]) -> Any:
        samples = []
        with preserved_global_rngs():
            for index, seed in pairs:
                seed_global_rngs(seed)
                samples.append(self.dataset[index])
        return default_collate(samples)
