"""The one seeding scheme: derive_seed, a SplitMix64 chain over a key path (xbar.devices.seeding)."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import stats

from xbar.devices.seeding import FLIP_STREAM, chain, derive_seed, splitmix64
from xbar.evaluation.streams import PROGRAM, instance_seeds


def test_derive_seed_is_the_documented_chain():
    """h_0 = SplitMix64(seed), h_j = SplitMix64(h_{j-1} ^ key_j), seed = h_m >> 1; a string key by
    the first 8 bytes (little endian) of the BLAKE2b digest of its repr."""
    name = int.from_bytes(hashlib.blake2b(repr("data-order").encode(), digest_size=8).digest(), "little")
    h = splitmix64(splitmix64(splitmix64(5) ^ name) ^ 3)
    assert chain(5, "data-order", 3) == h
    assert derive_seed(5, "data-order", 3) == h >> 1
    assert derive_seed(-1, -1) == splitmix64(splitmix64(2**64 - 1) ^ (2**64 - 1)) >> 1  # ints modulo 2^64


def test_instance_streams_are_derive_seed_of_their_index():
    """A Monte Carlo instance's stream is derive_seed(seed, *tags, index), for one or many indices."""
    seeds = instance_seeds(11, range(40), PROGRAM, 2)
    assert seeds == [derive_seed(11, PROGRAM, 2, i) for i in range(40)]


def test_named_streams_are_distinct_and_the_flip_stream_is_its_own():
    names = [derive_seed(0, k, e) for k in ("data-order", "init", "sample", "loader") for e in range(50)]
    assert len(set(names)) == len(names)
    s = instance_seeds(0, [0], PROGRAM)[0]
    assert derive_seed(s, FLIP_STREAM) not in (s, s + FLIP_STREAM)


def test_derived_seeds_are_uniform():
    """The top 4 bits of 16,000 derived seeds over 16 bins: chi-square with 15 degrees of freedom.

    Uniform seeds fail at the 0.1% level once in a thousand fixed choices; this one is fixed."""
    top = np.array([derive_seed(2026, "uniformity", i) >> 59 for i in range(16_000)])
    counts = np.bincount(top, minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-3
