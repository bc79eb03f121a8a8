"""Shared timing helpers for the benchmarks (medians of repeated, warmed-up runs; paired rounds)."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = 10, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def round_robin(
    steps: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """ms per call of every function, ``repeats`` rounds with one timed call each.

    In a round every function runs once untimed (caches and allocator settle after
    the previous function), then once timed; the order rotates from round to round.
    Sample ``i`` of every function comes from round ``i``, close in time.
    """
    keys = list(steps)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            steps[key]()
            sync(device)
            t0 = time.perf_counter()
            steps[key]()
            sync(device)
            samples[key].append((time.perf_counter() - t0) * 1e3)
    return samples


def quartiles(values: list[float]) -> list[float]:
    """[first, third] quartile (inclusive method; the values themselves when fewer than 2)."""
    if len(values) < 2:
        return [values[0], values[0]] if values else []
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], q[2]]


def environment(device: torch.device) -> dict:
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        import aihwkit

        env["aihwkit"] = aihwkit.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def emit(result: dict) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
