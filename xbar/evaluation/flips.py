"""Eq. 3 bit flips on the stored patterns of ``k`` instances at once, in place, at a cost that follows the flips.

The fliptensors of ``xbar.devices.bitflip`` (f1: 0 -> 1 with probability p1, f2: 1 -> 0
with p2, only at masked bit positions) are applied to rows ``[k, L]`` of stored
patterns, row i belonging to instance i. Every slot (element, masked bit) of a tensor
has a *global* position, so which slots flip depends on the instance's stream and on
the slot's position alone, never on how the tensor is cut into batches:

* sparse (max(p1, p2) <= ``DENSE_FRACTION``): per stream a count K ~ Binomial(N, p)
  over its N slots, then K distinct slots uniformly (``bitflip._binomial`` and
  ``bitflip._distinct_uniform``). Only the touched elements are read and written, and
  the flips are counted from their old bits: the cost is O(K log K), not O(N);
* dense (larger p): a counter-based draw, slot s of a stream with key c hits f1 when the
  low 32 bits of SplitMix64(c + (s + 1) * golden) are below p1 * 2^32 and f2 when its
  high 32 bits are below p2 * 2^32: any subset of slots is drawn exactly as it would
  be inside the whole tensor.

Both give independent Bernoulli(p) fliptensor entries (the dense one up to the 2^-32
resolution of p). Sparse slots are drawn on the CPU whatever the study's device (a GPU
would wait on every small step of a draw of a few dozen slots); which elements and bits
they touch is worked out there too, and one copy through pinned memory takes that to
the device, which reads and writes only the touched elements without the host waiting.
So the sparse flips are the same on every device.

Activations are drawn over the virtual tensor ``[images, *shape]`` of a site, in blocks
of ``block_images`` images whose size depends only on p and the per-image slot count
(``ActivationStreams``): image n's flips depend on (stream seed, n, element) alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xbar.devices.bitflip import (
    DENSE_FRACTION,
    BitFlipModel,
    _binomial,
    _distinct_uniform,
    _int_table,
    _ship,
    decode,
    encode,
)
from xbar.evaluation.streams import generators, instance_seeds

__all__ = [
    "Flipper", "StoredStack", "ActivationStreams", "mix64", "DENSE_TAG", "DRAW_DEVICE", "BLOCK_FLIPS",
    "MAX_BLOCK_IMAGES",
]

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

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # the SplitMix64 constants as signed int64
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
_LOW32 = (1 << 32) - 1
_STORAGE_DTYPES = {"float32": torch.float32, "float64": torch.float64}

SlotSource = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 values."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 tensors (two's complement wrap-around), as ``streams._splitmix64``
    without its leading ``+ golden``."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def sparse_slots(n_slots: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    """Sorted distinct slots of one sparse fliptensor over ``n_slots`` slots: K ~ Binomial(n_slots, p) of them."""
    k = _binomial(n_slots, p, gen, device)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return _distinct_uniform(n_slots, k, gen, device)


def _threshold(p: float) -> int:
    return int(round(p * (1 << 32)))


class Flipper:
    """Eq. 3 for one storage format and mask, on rows of stored patterns (see the module docstring)."""

    def __init__(self, storage: str, mask, device: torch.device) -> None:
        self.ref = BitFlipModel(0.0, 0.0, storage, mask)
        self.device = device
        self.bits = self.ref.mask_bits()
        self.m = len(self.bits)
        width = self.ref.bits
        self.values = [(1 << b) if b < width - 1 else -(1 << b) for b in self.bits]

    @staticmethod
    def is_dense(p1: float, p2: float) -> bool:
        return max(p1, p2) > DENSE_FRACTION

    def flip_rows(
        self,
        rows: torch.Tensor,
        p1: Sequence[float],
        p2: Sequence[float],
        sparse: SlotSource,
        dense_keys: Callable[[list[int]], Sequence[int]],
        first: int,
        counts: torch.Tensor,
    ) -> tuple[torch.Tensor | None, list[int]]:
        """Flip ``rows`` ``[k, L]`` (an integer pattern, contiguous) in place.

        Row i holds elements ``first .. first + L - 1`` of instance i's tensor.
        ``sparse(instances)`` returns the fliptensor entries (f1, f2) of those sparse
        instances as slots of ``rows.view(-1)`` (slot = flat element * m + mask position),
        on any device (the studies draw them on :data:`DRAW_DEVICE`);
        ``dense_keys(instances)`` the keys of those dense instances' counter-based streams. The number of bits that
        changed in row i is added to ``counts[i]``. Returns what was written: the flat
        indices of the elements the sparse rows touched (or None) and the dense rows.
        """
        if not self.m:
            return None, []
        touched = None
        sp = [i for i in range(len(p1)) if 0 < max(p1[i], p2[i]) and not self.is_dense(p1[i], p2[i])]
        de = [i for i in range(len(p1)) if self.is_dense(p1[i], p2[i])]
        if sp:
            s1, s2 = sparse(sp)
            touched = self._sparse(rows.view(-1), s1, s2, rows.shape[1], counts)
        if de:
            table = [de, list(dense_keys(de)), [_threshold(p1[i]) for i in de], [_threshold(p2[i]) for i in de]]
            idx, keys, t1, t2 = _ship(list(torch.tensor(table, dtype=torch.int64)), rows.device)
            sub, changed = self._dense(rows[idx], keys, t1, t2, first)
            rows[idx] = sub
            counts.index_add_(0, idx, changed)
        return touched, de

    def _sparse(
        self, flat: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, per: int, counts: torch.Tensor
    ) -> torch.Tensor | None:
        """Apply the sparse fliptensors ``s1`` (f1) and ``s2`` (f2) to ``flat``; returns the touched elements.

        Which elements and bits the slots name is worked out where the slots are (the CPU
        in the studies, where a GPU would pay a launch and a host wait for each small
        step), then moved to ``flat``'s device in one copy; only the reads and writes of
        the touched elements run there, without waiting for the host.
        """
        n1 = s1.numel()
        s = torch.cat([s1, s2])
        if not s.numel():
            return None
        m, here = self.m, s.device
        elem = torch.div(s, m, rounding_mode="floor")
        pos = s - elem * m
        touched, inv = torch.unique(elem, return_inverse=True)
        want = torch.ones_like(s)
        want[:n1] = 0  # f1 acts on 0 bits, f2 on 1 bits
        bitpos, bitval = _int_table(tuple(self.bits), here), _int_table(tuple(self.values), here)
        parts = [touched, inv, bitpos[pos], bitval[pos], want, torch.div(elem, per, rounding_mode="floor")]
        touched, inv, shift, value, want, row = _ship(parts, flat.device)
        T = touched.numel()
        old = flat[touched]
        change = ((old[inv].long() >> shift) & 1) == want
        # slots are distinct within each fliptensor and a slot in both changes once, so the
        # changed bits of an element are distinct: their sum is their OR (MSB negative, in range)
        f = torch.zeros(T, dtype=torch.int64, device=flat.device)
        f.index_add_(0, inv, torch.where(change, value, 0))
        flat[touched] = old ^ f.to(flat.dtype)
        counts.index_add_(0, row, change.long())
        return touched

    def _dense(
        self, rows: torch.Tensor, keys: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, first: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        L = rows.shape[1]
        base = torch.arange(first, first + L, dtype=torch.int64, device=rows.device) * self.m
        flip = torch.zeros_like(rows)
        changed = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
        for j, (b, v) in enumerate(zip(self.bits, self.values)):
            h = mix64(keys[:, None] + ((base + (j + 1)) * _GOLDEN)[None, :])
            one = ((rows >> b) & 1).bool()
            hit = torch.where(one, _srl(h, 32) < t2[:, None], (h & _LOW32) < t1[:, None])
            changed += hit.sum(1)
            flip |= hit.to(rows.dtype) * v
        return rows ^ flip, changed

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
        self, probs: Sequence[float], seed: int, batch: Sequence[int], tags: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[k, *shape]`` values: the tensor stored, flipped with instance i's p (p1 = p2), read back; and
        the changed bits per instance. Instance ``batch[i]`` draws from ``instance_seeds(seed, [batch[i]],
        *tags)`` (sparse) or the counter-based stream keyed by ``(..., *tags, DENSE_TAG)``."""
        k = len(probs)
        self._buffers(k)
        self._write(*self.dirty, restore=True)
        rows = self.rows[:k]
        n, m = rows.shape[1], self.f.m
        counts = torch.zeros(k, dtype=torch.int64, device=rows.device)

        def sparse(instances: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            f1, f2 = [], []
            seeds = instance_seeds(seed, [batch[i] for i in instances], *tags)
            for i, g in zip(instances, generators(seeds, DRAW_DEVICE)):
                f1.append(sparse_slots(n * m, probs[i], g, DRAW_DEVICE) + i * n * m)
                f2.append(sparse_slots(n * m, probs[i], g, DRAW_DEVICE) + i * n * m)
            return torch.cat(f1), torch.cat(f2)

        keys = _dense_keys(seed, batch, tags)
        self.dirty = self.f.flip_rows(rows, probs, probs, sparse, keys, 0, counts)
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
    image). Sparse: block b (images b*S .. b*S + S - 1, S = ``block_images(p, E*m)``) is
    drawn whole from the stream ``instance_seeds(seed, [j], *tags, b)``, and each data
    batch takes the slots of its images. Dense: the counter-based stream keyed by
    ``instance_seeds(seed, [j], *tags, DENSE_TAG)`` at global element n*E + e.
    """

    def __init__(self, flipper: Flipper, seed: int, batch: Sequence[int], probs: Sequence[float],
                 tags: tuple[int, ...], per_image: int, starts: Sequence[int] = ()) -> None:
        self.f = flipper
        self.starts = sorted(set(int(a) for a in starts))
        self.seed, self.batch, self.probs, self.tags = seed, list(batch), list(probs), tags
        self.E = per_image
        self.em = per_image * flipper.m
        self.size = [block_images(q, self.em) for q in self.probs]
        self.dense_keys = _dense_keys(seed, self.batch, tags)
        self.blocks: dict[tuple[int, int], tuple] = {}  # (i, b) -> (f1 slots, f2 slots, cuts1, cuts2)

    def _block(self, i: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (i, b)
        if key not in self.blocks:
            (g,) = generators(instance_seeds(self.seed, [self.batch[i]], *self.tags, b), DRAW_DEVICE)
            n = self.size[i] * self.em
            q = self.probs[i]
            draws = (sparse_slots(n, q, g, DRAW_DEVICE), sparse_slots(n, q, g, DRAW_DEVICE))
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

        self.f.flip_rows(rows, self.probs, self.probs, sparse, self.dense_keys, start * self.E, counts)
