"""The user's own data: ``npz:FILE``, ``imagefolder:DIR``, Python datasets, and the data options.

A *data spec* is a registry name (``mnist5k``, ``digits``, ``mnist``, ``cifar10``,
``cifar100``), ``npz:FILE`` (arrays ``x_train, y_train, x_test, y_test``) or
``imagefolder:DIR`` (torchvision ``ImageFolder`` layout under ``DIR/train`` and
``DIR/test``); from Python also a :class:`~xbar.data.split.DatasetSplit` or a pair of
torch ``Dataset`` (:func:`from_datasets`).

Options, recorded in a run's manifest so that a study rebuilds the same data:

- ``split``: ``"stratified"`` (each class split ``train_fraction`` : rest, the default)
  or ``"random"`` (one unstratified random permutation); only for the sets that are
  split here (``mnist5k``, ``digits``). The split seed is ``load``'s ``seed``.
- ``train_fraction``: share of the samples in the training part (default 0.8).
- ``normalize``: ``"default"`` (the data set's own: MNIST/CIFAR mean and std for those
  sets, pixels in [0, 1] for the others), ``"none"`` (pixels in [0, 1] only: uint8 / 255,
  the 8x8 digits / 16), or ``"M1,M2,../S1,S2,.."`` (per-channel mean and std applied to
  the [0, 1] pixels; one value serves every channel).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from xbar.data.split import DatasetSplit
from xbar.errors import InputError, first_line

SPEC_HELP = "a data set name, npz:FILE or imagefolder:DIR"
SPLITS = ("stratified", "random")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ------------------------------------------------------------------------ options
def check_options(split: str | None, train_fraction: float | None, normalize: Any) -> tuple[str | None, float | None, str | None]:
    """The options validated, ``normalize`` as its canonical string; InputError on a bad one."""
    if split is not None and split not in SPLITS:
        raise InputError(f"split = {split!r}: expected one of {', '.join(SPLITS)}")
    if train_fraction is not None:
        ok = isinstance(train_fraction, int | float) and not isinstance(train_fraction, bool)
        if not ok or not math.isfinite(train_fraction) or not 0 < train_fraction < 1:
            raise InputError(f"train_fraction = {train_fraction!r}: expected a fraction in (0, 1)")
    return split, None if train_fraction is None else float(train_fraction), normalize_text(normalize)


def normalize_text(value: Any) -> str | None:
    """Canonical form of a ``normalize`` option: ``default``, ``none`` or ``M1,../S1,..``."""
    if value is None:
        return None
    if isinstance(value, tuple | list) and len(value) == 2:
        mean, std = (v if isinstance(v, Sequence) else (v,) for v in value)
        value = f"{','.join(str(float(m)) for m in mean)}/{','.join(str(float(s)) for s in std)}"
    if not isinstance(value, str):
        raise InputError(f"normalize = {value!r}: expected default, none or MEAN/STD (e.g. 0.1307/0.3081)")
    text = value.strip().lower()
    if text in ("default", "none"):
        return text
    _parse_mean_std(text)
    return text


def _parse_mean_std(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    bad = InputError(f"normalize = {text!r}: expected default, none or MEAN/STD with comma-separated "
                     "per-channel values (e.g. 0.1307/0.3081), std > 0")
    if text.count("/") != 1:
        raise bad
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        raise bad from None
    if len(mean) != len(std) or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise bad
    return mean, std


def mean_std(normalize: str | None, default: tuple | None, channels: int, where: str):
    """``(mean, std)`` per channel for ``normalize`` (None: no normalisation beyond [0, 1])."""
    mode = normalize or "default"
    if mode == "none":
        return None
    if mode == "default":
        return default
    mean, std = _parse_mean_std(mode)
    if len(mean) not in (1, channels):
        raise InputError(f"{where}: normalize = {mode!r} gives {len(mean)} channels; the images have {channels}")
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    return mean, std


def apply_mean_std(images: np.ndarray, stats) -> np.ndarray:
    """``(images - mean) / std`` per channel of ``[N, C, H, W]`` float32 images (a new array)."""
    if stats is None:
        return images
    mean = np.asarray(stats[0], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(stats[1], dtype=np.float32).reshape(1, -1, 1, 1)
    return (images - mean) / std


def split_indices(labels: np.ndarray, train_fraction: float, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: per class (``stratified``) or from one permutation (``random``)."""
    if split == "stratified":
        from xbar.data.bundled import stratified_split

        return stratified_split(labels, train_fraction, seed)
    perm = np.random.default_rng(seed).permutation(len(labels))
    k = int(round(train_fraction * len(labels)))
    return perm[:k], perm[k:]


# --------------------------------------------------------------------------- specs
def parse(spec: str | os.PathLike) -> tuple[str, str]:
    """``(kind, canonical spec)``: kind ``name``, ``npz`` or ``imagefolder``; paths made absolute."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"data {spec!r}: expected {SPEC_HELP}")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        return "name", text
    if kind not in ("npz", "imagefolder"):
        raise InputError(f"data {text!r}: unknown kind {kind!r}; expected {SPEC_HELP}")
    if not rest:
        raise InputError(f"data {text!r}: expected a path after {kind}:")
    return kind, f"{kind}:{Path(rest).expanduser().resolve()}"


def fixed_split_options(spec: str, split: str | None, train_fraction: float | None) -> None:
    """Refuse split options for a data set whose train/test parts are given."""
    if split is not None or train_fraction is not None:
        raise InputError(f"data {spec!r}: has a fixed train/test split; split and train_fraction apply to "
                         "mnist5k and digits")


# ----------------------------------------------------------------------------- npz
def npz(path: str | os.PathLike, normalize: str | None = None) -> DatasetSplit:
    """``x_train, y_train, x_test, y_test`` from a NumPy ``.npz`` (never unpickled).

    Images may be ``[N, H, W]`` (one channel), ``[N, C, H, W]``, ``[N, H, W, C]`` (C <= 4) or
    flat ``[N, D]`` with D a square; uint8 pixels are divided by 255, floats kept. Labels are
    integers from 0; ``num_classes`` is the largest label + 1.
    """
    p = Path(path)
    where = f"npz:{p}"
    if not p.is_file():
        raise InputError(f"{where}: no such file")
    try:
        with np.load(p, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise InputError(f"{where}: {missing[0]}: missing; expected arrays {', '.join(NPZ_KEYS)}")
            arrays = {k: f[k] for k in NPZ_KEYS}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: not a readable .npz of plain arrays ({first_line(exc)})") from None
    images = {part: _images(arrays[f"x_{part}"], f"{where}: x_{part}") for part in ("train", "test")}
    labels = {part: _labels(arrays[f"y_{part}"], len(images[part]), f"{where}: y_{part}") for part in ("train", "test")}
    shape_tr, shape_te = images["train"].shape[1:], images["test"].shape[1:]
    if shape_tr != shape_te:
        raise InputError(f"{where}: x_test images are {list(shape_te)}, x_train {list(shape_tr)}; expected the same shape")
    channels, side = shape_tr[0], shape_tr[1]
    stats = mean_std(normalize, None, channels, where)
    num_classes = int(max(labels["train"].max(), labels["test"].max())) + 1
    parts = [TensorDataset(torch.from_numpy(np.ascontiguousarray(apply_mean_std(images[part], stats))),
                           torch.from_numpy(labels[part])) for part in ("train", "test")]
    return DatasetSplit(f"npz:{p.resolve()}", parts[0], parts[1], int(channels), num_classes, int(side))


def _images(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise InputError(f"{where}: dtype {x.dtype}: expected numbers (uint8 pixels or floats)")
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise InputError(f"{where}: shape {list(x.shape)}: flat images need a square number of pixels")
        x = x.reshape(len(x), 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] > 4 and x.shape[3] <= 4:
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise InputError(f"{where}: shape {list(x.shape)}: expected [N, H, W], [N, C, H, W], [N, H, W, C] or [N, D]")
    if len(x) == 0:
        raise InputError(f"{where}: holds no images")
    if x.shape[2] != x.shape[3]:
        raise InputError(f"{where}: images are {x.shape[2]}x{x.shape[3]}; expected square images")
    out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{where}: holds NaN or infinite values")
    return out


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{where}: shape {list(y.shape)}: expected [{n}] (one label per image)")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise InputError(f"{where}: dtype {y.dtype}: expected integer class labels")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise InputError(f"{where}: label {int(y.min())}: expected class labels 0, 1, 2, ...")
    return y


# --------------------------------------------------------------------- imagefolder
def _open_image(path: str, mode: str):
    from PIL import Image

    with open(path, "rb") as fh:
        return Image.open(fh).convert(mode)


def imagefolder(root: str | os.PathLike, normalize: str | None = None) -> DatasetSplit:
    """torchvision ``ImageFolder`` data: ``root/train/CLASS/*.png`` and ``root/test/CLASS/*.png``.

    Classes are the training part's folder names (sorted); the test part uses the same
    label numbers (it may lack classes). Grayscale images stay one channel, others are
    RGB; every image is resized to the first training image's side (which must be square).
    """
    from torchvision import datasets, transforms

    base = Path(root)
    where = f"imagefolder:{base}"
    for part in ("train", "test"):
        if not (base / part).is_dir():
            raise InputError(f"{where}: no {part}/ folder; expected {base}/{part}/CLASS/IMAGE files")
    try:
        probe = datasets.ImageFolder(str(base / "train"))
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        raise InputError(f"{where}: train/: {first_line(exc)}") from None
    try:
        from PIL import Image

        with Image.open(probe.samples[0][0]) as first:
            first_mode, (w, h) = first.mode, first.size
    except Exception as exc:
        raise InputError(f"{where}: {probe.samples[0][0]}: not a readable image ({first_line(exc)})") from None
    if w != h:
        raise InputError(f"{where}: {probe.samples[0][0]} is {w}x{h}; expected square images")
    mode = "L" if first_mode in ("1", "L", "I", "I;16", "F") else "RGB"
    channels = 1 if mode == "L" else 3
    stats = mean_std(normalize, None, channels, where)
    steps = [transforms.Resize((h, w)), transforms.ToTensor()]
    if stats is not None:
        steps.append(transforms.Normalize(stats[0], stats[1]))
    tf = transforms.Compose(steps)
    loader = partial(_open_image, mode=mode)
    train = datasets.ImageFolder(str(base / "train"), transform=tf, loader=loader)
    classes = train.class_to_idx

    class _SameClasses(datasets.ImageFolder):
        def find_classes(self, directory):
            return list(classes), dict(classes)

    try:
        test = _SameClasses(str(base / "test"), transform=tf, loader=loader, allow_empty=True)
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        raise InputError(f"{where}: test/: {first_line(exc)}") from None
    extra = sorted({p.name for p in (base / "test").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise InputError(f"{where}: test/{extra[0]}: a class with no train/ folder; expected the classes {', '.join(classes)}")
    if len(test) == 0:
        raise InputError(f"{where}: test/ holds no images in the classes {', '.join(classes)}")
    return DatasetSplit(f"imagefolder:{base.resolve()}", train, test, channels, len(classes), h)


# -------------------------------------------------------------------------- Python
def from_datasets(train: Dataset, test: Dataset, name: str = "custom", num_classes: int | None = None) -> DatasetSplit:
    """A :class:`DatasetSplit` of two torch datasets yielding ``(image [C, S, S], label)``.

    The input shape comes from the first training image; ``num_classes`` (unless given)
    from ``classes`` / ``targets`` / tensors of the datasets, else by reading every label.
    """
    for part, ds in (("train", train), ("test", test)):
        if not isinstance(ds, Dataset) or not hasattr(ds, "__len__") or len(ds) == 0:
            raise InputError(f"data {name!r}: {part}: expected a non-empty torch Dataset with a length")
    x, _ = train[0]
    x = torch.as_tensor(x)
    if x.dim() != 3 or x.shape[1] != x.shape[2]:
        raise InputError(f"data {name!r}: the first training image has shape {list(x.shape)}; expected [C, S, S]")
    if num_classes is None:
        num_classes = max(_class_count(train), _class_count(test))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"data {name!r}: num_classes = {num_classes!r}: expected a positive integer")
    return DatasetSplit(name, train, test, int(x.shape[0]), int(num_classes), int(x.shape[1]))


def _class_count(ds: Dataset) -> int:
    if isinstance(getattr(ds, "classes", None), list | tuple):
        return len(ds.classes)
    if isinstance(ds, TensorDataset):
        return int(ds.tensors[-1].max()) + 1
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return int(torch.as_tensor(targets).max()) + 1
    return int(max(int(ds[i][1]) for i in range(len(ds)))) + 1
