"""Workload datasets: bundled offline sets (``mnist5k``, ``digits``), local MNIST/CIFAR, and the
user's own (``npz:FILE``, ``imagefolder:DIR``, Python datasets; see ``xbar.data.sources``).

``load(spec, root, seed, split=, train_fraction=, normalize=)`` returns a ``DatasetSplit``; ``loaders`` wraps it in
seeded ``DataLoader``s; ``SeededSamples`` reads samples with per-sample seeded
augmentation (what the trainer uses for data sets that are not tensors).
"""

from xbar.data.bundled import digits, mnist5k, stratified_split
from xbar.data.loaders import loaders
from xbar.data.registry import load, names, shape_of
from xbar.data.seeded import SeededSamples, preserved_global_rngs, seed_global_rngs
from xbar.data.sources import from_datasets, imagefolder, npz
from xbar.data.split import DatasetSplit
from xbar.data.torchvision_sets import cifar10, cifar100, mnist

__all__ = [
    "DatasetSplit",
    "SeededSamples",
    "cifar10",
    "cifar100",
    "digits",
    "from_datasets",
    "imagefolder",
    "load",
    "loaders",
    "mnist",
    "mnist5k",
    "names",
    "npz",
    "preserved_global_rngs",
    "seed_global_rngs",
    "shape_of",
    "stratified_split",
]
