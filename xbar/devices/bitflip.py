"""Bit flips on stored bit patterns: the fliptensors of Emonds et al. (Eq. 3).

A value is stored as a bit pattern (a float format, or a symmetric per-tensor int8
code). Each bit flips 0 -> 1 with probability ``p_0to1`` (p1 of the paper) and
1 -> 0 with probability ``p_1to0`` (p2), independently, but only at the bit
positions a mask lets flip (the paper's Fig. 4 masks). With fliptensors f1 ~
Bernoulli(p1) and f2 ~ Bernoulli(p2) the stored pattern x becomes (Eq. 3)

    y = (x OR f1) XOR (x AND f2),

which is the same as ``(NOT x AND f1) OR (x AND NOT f2)``: f1 only acts on 0 bits,
f2 only on 1 bits.

Cost follows the number of flips, not the number of bits: for small p the
number of fliptensor entries K ~ Binomial(N, p) over the N masked bit slots is
drawn first, then K distinct slots uniformly, and only those elements are
touched. For large p the dense Bernoulli fliptensors are cheaper and are used
instead; both paths have exactly the same distribution.

This module is the one Eq. 3 engine: :func:`flip_bits` / :func:`flip_stored` flip one
tensor from a generator; :class:`Flipper` flips rows ``[k, L]`` of k instances' stored
patterns in place, with sparse slots drawn by the caller or counter-based dense draws
keyed by slot position (the bit-flip studies, ``xbar.evaluation.flips``, use it so that
a slice of a tensor flips exactly as inside the whole tensor). :class:`BitFlipModel`
and the storage formats live in :mod:`xbar.devices.bitflip_config` (no torch there)
and are re-exported here.

Exponent flips can produce +-inf and NaN (an all-ones exponent). They are kept
as they are, as the hardware would read them back; a study that wants to count
them can test ``torch.isfinite`` on the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from xbar.devices.bitflip_config import (
    DENSE_FRACTION,
    FLOAT_LAYOUTS,
    STORAGE_BITS,
    BitFlipModel,
    Mask,
    _is_prob,
    dense_regime,
)
from xbar.devices.seeding import GOLDEN, mix64, srl

__all__ = [
    "BitFlipModel",
    "DENSE_FRACTION",
    "STORAGE_BITS",
    "FLOAT_LAYOUTS",
    "Flipper",
    "dense_regime",
    "encode",
    "decode",
    "flipper",
    "mix64",
    "sparse_slots",
    "flip_stored",
    "flip_bits",
    "flip_counts",
    "expected_flips",
]

_FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}

#: Integer dtype of equal width that holds each format's bit pattern.
_INT_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.int16,
    "bfloat16": torch.int16,
    "float32": torch.int32,
    "float64": torch.int64,
    "int8": torch.int8,
}

# ---------------------------------------------------------------------------
# storage encoding


def encode(
    x: torch.Tensor, model: BitFlipModel, scale: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stored bit pattern of ``x`` (an integer tensor of the storage width) and the int8 scale.

    Float storage: ``x`` cast to the format, reinterpreted with ``Tensor.view`` on
    the integer type of equal width (scale is None). int8: symmetric per-tensor
    quantization, scale = max|x| / 127, codes round(x / scale) clamped to
    [-127, 127], two's complement. With a given ``scale`` (re-encoding values read
    back from flipped storage) the codes are clamped to [-128, 127] instead.
    """
    if not x.is_floating_point():
        raise ValueError(f"flip_bits x: got dtype {x.dtype}, expected a floating-point tensor")
    if model.storage == "int8":
        xd = x.detach().to(torch.float64) if x.dtype == torch.float64 else x.detach().float()
        if scale is None:
            top = xd.abs().amax() if xd.numel() else xd.new_zeros(())
            s = torch.where(top > 0, top / 127.0, torch.ones_like(top))
            codes = torch.round(xd / s).clamp_(-127, 127)
        else:
            s = torch.as_tensor(scale, dtype=xd.dtype, device=xd.device)
            codes = torch.round(xd / s).clamp_(-128, 127)
        return codes.to(torch.int8), s
    fdt = _FLOAT_DTYPES[model.storage]
    return x.detach().to(fdt).contiguous().view(_INT_DTYPES[model.storage]), None


def decode(
    pattern: torch.Tensor,
    model: BitFlipModel,
    scale: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Values of a stored pattern (inverse of :func:`encode`), cast to ``dtype``."""
    if model.storage == "int8":
        if scale is None:
            raise ValueError("decode scale: got None, expected the int8 scale from encode")
        return (pattern.to(scale.dtype) * scale).to(dtype)
    return pattern.view(_FLOAT_DTYPES[model.storage]).to(dtype)


# ---------------------------------------------------------------------------
# fliptensors: sparse draws, counter-based draws, and Eq. 3 on rows of patterns


def _signed_bit_values(bits: int) -> list[int]:
    """Value of each single bit in a signed integer of ``bits`` (the MSB is negative)."""
    return [(1 << b) if b < bits - 1 else -(1 << b) for b in range(bits)]


def _distinct_uniform(n: int, k: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """``k`` distinct integers drawn uniformly from [0, n) (a uniform random k-subset), sorted.

    For k <= n / 16: draw k with replacement, then redraw as many as were lost to
    duplicates until k are distinct (each round leaves about k/n of the missing
    ones missing). The process is symmetric under any permutation of [0, n), so
    the resulting set is uniform over k-subsets. For larger k a random
    permutation, O(n), which is then O(k) too.
    """
    kw = {"generator": generator, "device": device, "dtype": torch.int64}
    if 16 * k > n:
        return torch.sort(torch.randperm(n, **kw)[:k]).values
    idx = torch.unique(torch.randint(n, (k,), **kw))
    while idx.numel() < k:
        more = torch.randint(n, (k - idx.numel(),), **kw)
        idx = torch.unique(torch.cat([idx, more]))
    return idx


def _binomial(n: int, p: float, generator: torch.Generator | None, device) -> int:
    """One Binomial(n, p) draw on ``device``.

    Its parameters are filled on the device (no host-to-device copy); reading the
    count back is the draw's one synchronisation on a GPU.
    """
    if p <= 0.0 or n == 0:
        return 0
    if p >= 1.0:
        return n
    count = torch.full((1,), float(n), dtype=torch.float64, device=device)
    prob = torch.full((1,), p, dtype=torch.float64, device=device)
    return int(torch.binomial(count, prob, generator=generator).item())


def sparse_slots(n_slots: int, p: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """The nonzero slots of one fliptensor over ``n_slots`` Bernoulli(p) slots, sorted (int64 on ``device``).

    Their count K ~ Binomial(n_slots, p) is drawn first, then K distinct slots
    uniformly: the same distribution as n_slots Bernoulli draws at a cost ~ K.
    """
    k = _binomial(n_slots, p, generator, device)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return _distinct_uniform(n_slots, k, generator, device)


@functools.lru_cache(maxsize=64)
def _int_table(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``torch.tensor(values)`` (int64) on ``device``, made once: a new one would be a
    host-to-device copy, which waits for the GPU, at every flip."""
    return torch.tensor(values, dtype=torch.int64, device=device)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to a GPU through pinned memory, so the host does not wait."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _ship(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """1-D int64 ``parts`` (the first of any length, the others of one length) on ``device``, in one copy."""
    if parts[0].device == device:
        return parts
    return _split(_to_device(torch.cat(parts), device), parts[0].numel(), len(parts) - 1)


def _split(plan: torch.Tensor, head: int, rows: int) -> list[torch.Tensor]:
    """Inverse of ``torch.cat(parts)`` for :func:`_ship`."""
    return [plan[:head], *plan[head:].view(rows, -1)]


_LOW32 = (1 << 32) - 1


def _threshold(p: float) -> int:
    return int(round(p * (1 << 32)))


SlotSource = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]


class Flipper:
    """Eq. 3 for one storage format and mask, in place on rows ``[k, L]`` of stored patterns.

    Row i belongs to instance i. Every slot (element, masked bit) has a position, so
    which slots flip depends on the instance's stream and the slot's position alone,
    never on how a tensor is cut into pieces:

    * sparse fliptensors (:func:`sparse_slots`): the slots f1 (0 -> 1) and f2 (1 -> 0)
      of each row, drawn by the caller; only the touched elements are read and
      written, and the flips are counted from their old bits (cost O(K log K));
    * dense (:func:`dense_regime`): counter-based, slot s of a stream with key c hits f1
      when the low 32 bits of SplitMix64(c + (s + 1) * golden) are below p1 * 2^32 and
      f2 when its high 32 bits are below p2 * 2^32 (p resolved to 2^-32): any subset
      of slots is drawn exactly as inside the whole tensor.
    """

    def __init__(self, storage: str, mask: Mask = "all") -> None:
        self.ref = BitFlipModel(0.0, 0.0, storage, mask)
        self.bits = self.ref.mask_bits()
        self.m = len(self.bits)
        width = _signed_bit_values(self.ref.bits)
        self.values = [width[b] for b in self.bits]

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
        """Flip ``rows`` ``[k, L]`` (an integer pattern, contiguous) in place; row i with p1[i], p2[i].

        Row i holds elements ``first .. first + L - 1`` of instance i's tensor.
        ``sparse(instances)`` returns the fliptensor slots (f1, f2) of those sparse
        instances as slots of ``rows.view(-1)`` (slot = flat element * m + mask position),
        on any device; ``dense_keys(instances)`` the keys of those dense instances'
        counter-based streams. The number of bits that changed in row i is added to
        ``counts[i]``. Returns what was written: the flat indices of the elements the
        sparse rows touched (or None) and the dense rows.
        """
        if not self.m:
            return None, []
        touched = None
        sp = [i for i in range(len(p1)) if 0 < max(p1[i], p2[i]) and not dense_regime(p1[i], p2[i])]
        de = [i for i in range(len(p1)) if dense_regime(p1[i], p2[i])]
        if sp:
            s1, s2 = sparse(sp)
            touched = self.flip_slots(rows.view(-1), s1, s2, rows.shape[1], counts)
        if de:
            table = [de, list(dense_keys(de)), [_threshold(p1[i]) for i in de], [_threshold(p2[i]) for i in de]]
            idx, keys, t1, t2 = _ship(list(torch.tensor(table, dtype=torch.int64)), rows.device)
            sub, changed = self._dense(rows[idx], keys, t1, t2, first)
            rows[idx] = sub
            counts.index_add_(0, idx, changed)
        return touched, de

    def flip_slots(
        self, flat: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, per: int = 0,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Apply the sparse fliptensors ``s1`` (f1) and ``s2`` (f2), each of distinct slots, to ``flat`` in place.

        The changed bits of slot s's row (s // (per * m)) are added to ``counts``.
        Returns the touched elements. Which elements and bits the slots name is
        worked out where the slots are (the CPU, where a GPU would pay a launch and
        a host wait for each small step), then moved to ``flat``'s device in one
        copy; only the reads and writes of the touched elements run there, without
        waiting for the host.
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
        parts = [touched, inv, bitpos[pos], bitval[pos], want]
        if counts is not None:
            parts.append(torch.div(elem, per, rounding_mode="floor"))
        touched, inv, shift, value, want, *row = _ship(parts, flat.device)
        old = flat[touched]
        change = ((old[inv].long() >> shift) & 1) == want
        # slots are distinct within each fliptensor and a slot in both changes once, so the
        # changed bits of an element are distinct: their sum is their OR (MSB negative, in range)
        f = torch.zeros(touched.numel(), dtype=torch.int64, device=flat.device)
        f.index_add_(0, inv, torch.where(change, value, 0))
        flat[touched] = old ^ f.to(flat.dtype)
        if counts is not None:
            counts.index_add_(0, row[0], change.long())
        return touched

    def _dense(
        self, rows: torch.Tensor, keys: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, first: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        L = rows.shape[1]
        base = torch.arange(first, first + L, dtype=torch.int64, device=rows.device) * self.m
        flip = torch.zeros_like(rows)
        changed = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
        for j, (b, v) in enumerate(zip(self.bits, self.values)):
            h = mix64(keys[:, None] + ((base + (j + 1)) * GOLDEN)[None, :])
            one = ((rows >> b) & 1).bool()
            hit = torch.where(one, srl(h, 32) < t2[:, None], (h & _LOW32) < t1[:, None])
            changed += hit.sum(1)
            flip |= hit.to(rows.dtype) * v
        return rows ^ flip, changed


@functools.lru_cache(maxsize=64)
def flipper(storage: str, mask: Mask = "all") -> Flipper:
    """The :class:`Flipper` of a storage format and mask, made once."""
    return Flipper(storage, mask)


def _dense_fliptensor(
    shape: torch.Size,
    mask_bits: list[int],
    p: float,
    int_dtype: torch.dtype,
    bitvals: list[int],
    generator: torch.Generator | None,
    device,
) -> torch.Tensor:
    """Full fliptensor: for each masked bit an independent Bernoulli(p) draw per element."""
    f = torch.zeros(shape, dtype=int_dtype, device=device)
    if p <= 0.0:
        return f
    for b in mask_bits:
        hit = torch.rand(shape, generator=generator, device=device) < p
        f |= hit.to(int_dtype) * bitvals[b]
    return f


def flip_stored(
    pattern: torch.Tensor,
    model: BitFlipModel,
    generator: torch.Generator | None = None,
    method: Literal["auto", "sparse", "dense"] = "auto",
) -> torch.Tensor:
    """Apply Eq. 3, y = (x OR f1) XOR (x AND f2), to an integer bit pattern; returns a new tensor.

    ``pattern`` has the storage's integer dtype (int8/int16/int32/int64).
    ``method="auto"`` uses the sparse path (:func:`sparse_slots` for f1 then f2,
    applied by :meth:`Flipper.flip_slots`, cost ~ number of flips) unless
    :func:`dense_regime`, then dense Bernoulli fliptensors drawn bit by bit from
    ``generator`` (a whole tensor, so no counter-based stream is needed). Random
    numbers are drawn on ``generator``'s device; with no generator the sparse path
    draws on the CPU's default generator and the dense one on the pattern's device.
    The result is on the pattern's device. A sparse draw is a dozen small steps:
    drawn and worked out on the CPU, it reaches a GPU pattern in one copy through
    pinned memory and the host never waits for the GPU (with a CUDA generator it
    waits five times, to read sizes).
    """
    int_dtype = _INT_DTYPES[model.storage]
    if pattern.dtype != int_dtype:
        raise ValueError(
            f"flip_stored pattern: got dtype {pattern.dtype}, expected {int_dtype} "
            f"for storage {model.storage!r}"
        )
    if method not in ("auto", "sparse", "dense"):
        raise ValueError(f"flip_stored method: got {method!r}, expected auto, sparse or dense")
    f = flipper(model.storage, model.mask)
    y = pattern.clone()
    numel = y.numel()
    if numel == 0 or not f.m or (model.p_0to1 == 0.0 and model.p_1to0 == 0.0):
        return y
    if method == "auto":
        method = "sparse" if model.sparse else "dense"

    if method == "dense":
        bitvals = _signed_bit_values(model.bits)
        rng_device = generator.device if generator is not None else y.device
        f1 = _dense_fliptensor(y.shape, f.bits, model.p_0to1, int_dtype, bitvals, generator, rng_device).to(y.device)
        f2 = _dense_fliptensor(y.shape, f.bits, model.p_1to0, int_dtype, bitvals, generator, rng_device).to(y.device)
        return (y | f1) ^ (y & f2)

    rng_device = generator.device if generator is not None else torch.device("cpu")
    n_slots = numel * f.m
    s1 = sparse_slots(n_slots, model.p_0to1, generator, rng_device)
    s2 = sparse_slots(n_slots, model.p_1to0, generator, rng_device)
    f.flip_slots(y.view(-1), s1, s2)
    return y


def flip_bits(
    x: torch.Tensor,
    model: BitFlipModel,
    generator: torch.Generator | None = None,
    method: Literal["auto", "sparse", "dense"] = "auto",
    counts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """``x`` stored in ``model.storage``, hit by bit flips (Eq. 3), read back in x's dtype and shape.

    Float storage reinterprets the flipped pattern with ``Tensor.view``; int8 is
    dequantized with the per-tensor scale of the unflipped ``x``. NaN and inf from
    exponent flips are returned as they are. No gradient flows through the result.
    With ``counts=True`` also returns :func:`flip_counts` of the stored patterns
    before and after: exact even when ``x``'s dtype cannot hold the stored values
    (float64 storage read back into float32 rounds the low mantissa bits away).
    """
    pattern, scale = encode(x, model)
    flipped = flip_stored(pattern, model, generator=generator, method=method)
    y = decode(flipped, model, scale, dtype=x.dtype).reshape(x.shape)
    return (y, flip_counts(pattern, flipped, model)) if counts else y


# ---------------------------------------------------------------------------
# bookkeeping

#: Float dtypes whose values hold every value of a float storage format exactly.
_HOLDS: dict[torch.dtype, tuple[str, ...]] = {
    torch.float64: ("float16", "bfloat16", "float32", "float64"),
    torch.float32: ("float16", "bfloat16", "float32"),
    torch.float16: ("float16",),
    torch.bfloat16: ("bfloat16",),
}


def flip_counts(before: torch.Tensor, after: torch.Tensor, model: BitFlipModel) -> dict:
    """Per bit position (index 0 = LSB): 0 -> 1 and 1 -> 0 flips, and zeros/ones before.

    ``before``/``after`` are either stored patterns (the storage's integer dtype)
    or values; values are encoded (int8 with the scale of ``before``). Counting
    from values needs a dtype that holds the storage format exactly (the format's own
    dtype or a wider one; any float dtype for int8): values read back into a narrower
    dtype were rounded, and a ValueError says to count with ``flip_bits(..., counts=True)``.
    NaN payloads may not survive dtype casts.
    Returns lists of ints ``"0to1"``, ``"1to0"``, ``"zeros"``, ``"ones"`` of length
    ``model.bits`` and the totals ``"total_0to1"``, ``"total_1to0"``.
    """
    int_dtype = _INT_DTYPES[model.storage]
    if before.dtype == int_dtype:
        b_pat, a_pat = before, after
    else:
        narrow = [t.dtype for t in (before, after) if model.storage in FLOAT_LAYOUTS
                  and t.is_floating_point() and model.storage not in _HOLDS.get(t.dtype, ())]
        if narrow:
            raise ValueError(
                f"flip_counts: got {narrow[0]} values for storage {model.storage!r}, which {narrow[0]} cannot "
                f"hold exactly; count from the stored patterns or with flip_bits(..., counts=True)"
            )
        b_pat, scale = encode(before, model)
        a_pat, _ = encode(after, model, scale=scale)
    if a_pat.dtype != int_dtype or a_pat.shape != b_pat.shape:
        raise ValueError(
            f"flip_counts after: got {a_pat.dtype} {tuple(a_pat.shape)}, expected "
            f"{int_dtype} {tuple(b_pat.shape)} like before"
        )
    b64 = b_pat.reshape(-1).to(torch.int64)
    a64 = a_pat.reshape(-1).to(torch.int64)
    out: dict = {"0to1": [], "1to0": [], "zeros": [], "ones": []}
    for bit in range(model.bits):
        bb = (b64 >> bit) & 1
        ab = (a64 >> bit) & 1
        ones = int(bb.sum())
        out["ones"].append(ones)
        out["zeros"].append(b64.numel() - ones)
        out["0to1"].append(int(((bb == 0) & (ab == 1)).sum()))
        out["1to0"].append(int(((bb == 1) & (ab == 0)).sum()))
    out["total_0to1"] = sum(out["0to1"])
    out["total_1to0"] = sum(out["1to0"])
    return out


def expected_flips(numel: int, model: BitFlipModel, ones_fraction: float = 0.5) -> float:
    """Expected number of flipped bits in ``numel`` stored values.

    numel * n_masked_bits * ((1 - q) p1 + q p2), with q the fraction of masked
    bits that are 1 (0.5 for unknown data).
    """
    if not _is_prob(ones_fraction):
        raise ValueError(f"expected_flips ones_fraction: got {ones_fraction!r}, expected [0, 1]")
    q = float(ones_fraction)
    return numel * len(model.mask_bits()) * ((1.0 - q) * model.p_0to1 + q * model.p_1to0)
