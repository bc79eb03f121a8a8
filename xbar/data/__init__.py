"""Workload datasets: bundled offline sets (``mnist5k``, ``digits``) and local MNIST/CIFAR.

``load(name, root, seed)`` returns a ``DatasetSplit``; ``loaders`` wraps it in
seeded ``DataLoader``s.
"""

from xbar.data.bundled import digits, mnist5k, stratified_split
from xbar.data.loaders import loaders
from xbar.data.registry import load, names
from xbar.data.split import DatasetSplit
from xbar.data.torchvision_sets import cifar10, cifar100, mnist

__all__ = [
    "DatasetSplit",
    "cifar10",
    "cifar100",
    "digits",
    "load",
    "loaders",
    "mnist",
    "mnist5k",
    "names",
    "stratified_split",
]
