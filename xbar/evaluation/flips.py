"""The bit-flip study's random streams: which fliptensors each instance's stored tensors get.

Eq. 3 itself is ``xbar.devices.bitflip.Flipper`` (sparse slots or counter-based dense
draws on rows ``[k, L]`` of stored patterns, row i belonging to instance i); this module
says which slots each instance draws, so that they depend on the instance's stream and
the slot's global position alone, never on how the tensor is cut into batches:

* weights and biases (:class:`StoredStack`): instance j's sparse slots come from
  ``instance_seeds(seed, [j], *tags)``, its dense draws are keyed by
  ``instance_seeds(seed, [j], *tags, DENSE_TAG)``;
* activations (:class:`ActivationStreams`) are drawn over the virtual tensor
  ``[images, *shape]`` of a site, in blocks of ``block_images`` images whose size
  depends only on p and the per-image slot count: image n's flips depend on
  (stream seed, n, element) alone.

Sparse slots are drawn on the CPU whatever the study's device (a GPU would wait on
every small step of a draw of a few dozen slots); one copy through pinned memory takes
what they touch to the device. So the sparse flips are the same on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xbar.devices.bitflip import Flipper, decode, encode, sparse_slots
from xbar.evaluation.streams import generators, instance_seeds

__all__ = ["StoredStack", "ActivationStreams", "DENSE_TAG", "DRAW_DEVICE", "BLOCK_FLIPS", "MAX_BLOCK_IMAGES"]

#: Where the sparse fliptensors are drawn, whatever the study's device: a few dozen slots
#: per tensor, where a GPU would pay a kernel launch and a wait for each small step. The
#: slots are then the same on every device.
DRAW_DEVICE = torch.device("cpu")
#: Tag of the counter-based (dense) stream next to a purpose's sparse stream.
DENSE_TAG = -1
#: A sparse activation block holds about this many expected fliptensor entries at most ...
BLOCK_FLIPS = 1 << 18
#: ... and at most this many images.
MAX_BLOCK_IMAGES = 256
_STORAGE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class StoredStack:
    """``k`` stored copies of one tensor (a layer's weight or bias), kept between batches of instances.

    ``flip`` first undoes the previous flips (writing the clean pattern back at the
    elements they touched), then flips each instance's row: with sparse flips the cost
    follows the number of flips, not the size of the tensor. The values returned are a
    view of a buffer that stays valid until the next ``flip``.
    """

    def __init__(self, flipper: Flipper, x: torch.Tensor, scale=None) -> None:
        self.f = flipper
        self.shape, self.dtype = tuple(x.shape), x.dtype
        pattern, self.scale = encode(x, flipper.ref, scale=scale)
        self.clean = pattern.reshape(-1)
        self.clean_values = decode(self.clean, flipper.ref, self.scale, dtype=x.dtype)
        # float storage of the compute dtype: the values are the pattern's own bits
        self.same = x.dtype == _STORAGE_DTYPES.get(flipper.ref.storage)
        self.rows: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.dirty: tuple[torch.Tensor | None, list[int]] = (None, [])

    def _buffers(self, k: int) -> None:
        if self.rows is None or self.rows.shape[0] < k:
            self.rows = self.clean.reshape(1, -1).repeat(k, 1)
            self.values = self.rows.view(self.dtype) if self.same else self.clean_values.reshape(1, -1).repeat(k, 1)
            self.dirty = (None, [])

    def _write(self, touched: torch.Tensor | None, dense: list[int], restore: bool) -> None:
        """At the written places: the clean pattern and values back (``restore``), or values from the pattern."""
        n = self.clean.numel()
        flat_rows, flat_vals = self.rows.view(-1), self.values.view(-1)
        if touched is not None:
            if restore:
                flat_rows[touched] = self.clean[touched % n]
            if not self.same:
                flat_vals[touched] = (self.clean_values[touched % n] if restore else
                                      decode(flat_rows[touched], self.f.ref, self.scale, dtype=self.dtype))
        if dense:
            idx = torch.tensor(dense, dtype=torch.int64, device=self.rows.device)
            if restore:
                self.rows[idx] = self.clean
            if not self.same:
                self.values[idx] = (self.clean_values if restore else
                                    decode(self.rows[idx], self.f.ref, self.scale, dtype=self.dtype))

    def flip(
        self, p1: Sequence[float], p2: Sequence[float], seed: int, batch: Sequence[int], tags: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[k, *shape]`` values: the tensor stored, flipped with instance i's p1[i] (0 -> 1) and p2[i]
        (1 -> 0), read back; and the changed bits per instance. Instance ``batch[i]`` draws from
        ``instance_seeds(seed, [batch[i]], *tags)`` (sparse) or the counter-based stream keyed by
        ``(..., *tags, DENSE_TAG)``."""
        k = len(p1)
        self._buffers(k)
        self._write(*self.dirty, restore=True)
        rows = self.rows[:k]
        n, m = rows.shape[1], self.f.m
        counts = torch.zeros(k, dtype=torch.int64, device=rows.device)

        def sparse(instances: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            f1, f2 = [], []
            seeds = instance_seeds(seed, [batch[i] for i in instances], *tags)
            for i, g in zip(instances, generators(seeds, DRAW_DEVICE)):
                f1.append(sparse_slots(n * m, p1[i], g, DRAW_DEVICE) + i * n * m)
                f2.append(sparse_slots(n * m, p2[i], g, DRAW_DEVICE) + i * n * m)
            return torch.cat(f1), torch.cat(f2)

        keys = _dense_keys(seed, batch, tags)
        self.dirty = self.f.flip_rows(rows, p1, p2, sparse, keys, 0, counts)
        self._write(*self.dirty, restore=False)
        return self.values[:k].view(k, *self.shape), counts


def _dense_keys(seed: int, batch: Sequence[int], tags: tuple[int, ...]) -> Callable[[list[int]], list[int]]:
    return lambda instances: instance_seeds(seed, [batch[i] for i in instances], *tags, DENSE_TAG)


def block_images(p: float, per_image_slots: int) -> int:
    """Images per sparse activation block: about ``BLOCK_FLIPS`` expected entries, 1 .. ``MAX_BLOCK_IMAGES``."""
    return int(max(1, min(MAX_BLOCK_IMAGES, BLOCK_FLIPS // max(1, int(np.ceil(p * per_image_slots))))))


class ActivationStreams:
    """Flips of one stored activation (a site's ``call``-th output in a forward) for a batch of instances.

    Instance i's fliptensors live on the virtual tensor ``[images, E]`` (E elements per
    image). Sparse: block b (images b*S .. b*S + S - 1, S = ``block_images(max(p1, p2), E*m)``) is
    drawn whole from the stream ``instance_seeds(seed, [j], *tags, b)``, and each data
    batch takes the slots of its images. Dense: the counter-based stream keyed by
    ``instance_seeds(seed, [j], *tags, DENSE_TAG)`` at global element n*E + e.
    """

    def __init__(self, flipper: Flipper, seed: int, batch: Sequence[int], p1: Sequence[float],
                 p2: Sequence[float], tags: tuple[int, ...], per_image: int, starts: Sequence[int] = ()) -> None:
        self.f = flipper
        self.starts = sorted(set(int(a) for a in starts))
        self.seed, self.batch, self.p1, self.p2, self.tags = seed, list(batch), list(p1), list(p2), tags
        self.E = per_image
        self.em = per_image * flipper.m
        self.size = [block_images(max(q1, q2), self.em) for q1, q2 in zip(self.p1, self.p2)]
        self.dense_keys = _dense_keys(seed, self.batch, tags)
        self.blocks: dict[tuple[int, int], tuple] = {}  # (i, b) -> (f1 slots, f2 slots, cuts1, cuts2)

    def _block(self, i: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (i, b)
        if key not in self.blocks:
            (g,) = generators(instance_seeds(self.seed, [self.batch[i]], *self.tags, b), DRAW_DEVICE)
            n = self.size[i] * self.em
            draws = (sparse_slots(n, self.p1[i], g, DRAW_DEVICE), sparse_slots(n, self.p2[i], g, DRAW_DEVICE))
            self.blocks[key] = draws + tuple(self._cuts(d, i, b, self.starts) for d in draws)
        return self.blocks[key]

    def _cuts(self, slots: torch.Tensor, i: int, b: int, images: Sequence[int]) -> dict[int, int]:
        """Position in ``slots`` (of block b of instance i) where each image of ``images`` starts."""
        S = self.size[i]
        pos = [(min(max(a - b * S, 0), S)) * self.em for a in images]
        if not pos:
            return {}
        cut = torch.searchsorted(slots, torch.tensor(pos, dtype=torch.int64, device=slots.device)).tolist()
        return dict(zip(images, cut))

    def flip(self, rows: torch.Tensor, start: int, images: int, counts: torch.Tensor) -> None:
        """Flip ``rows`` ``[k, images * E]``: images ``start .. start + images - 1`` of every instance."""
        em, end = self.em, start + images
        for key in [key for key in self.blocks if (key[1] + 1) * self.size[key[0]] <= start]:
            del self.blocks[key]  # batches come in order: blocks before this one are done

        def sparse(instances: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            f1, f2 = [], []
            for i in instances:
                S = self.size[i]
                for b in range(start // S, (end - 1) // S + 1):
                    off = (i * images + b * S - start) * em
                    s1, s2, c1, c2 = self._block(i, b)
                    for out, slots, cuts in ((f1, s1, c1), (f2, s2, c2)):
                        if start not in cuts or end not in cuts:  # not a batch boundary known in advance
                            cuts = self._cuts(slots, i, b, [start, end])
                        out.append(slots[cuts[start] : cuts[end]] + off)
            return torch.cat(f1), torch.cat(f2)

        self.f.flip_rows(rows, self.p1, self.p2, sparse, self.dense_keys, start * self.E, counts)
