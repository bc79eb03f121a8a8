"""Step time of training on several CPU processes (DDP, gloo) against one process, same global batch.

What ``torchrun --nproc_per_node=N xbar train`` does per step: every rank runs its
share of the global batch through the algorithm step (``xbar.training.distributed``:
per-rank noise streams reseeded, DDP gradient all-reduce in every backward, the
metrics all-reduce), against the one-process step on the whole batch. The
one-process step is timed twice: with one thread, and with as many threads as there
are processes (the fair comparison: both use the same cores).

Rank 0 times the one-process steps while the other ranks wait at a barrier; then all
ranks time the DDP steps; the rounds alternate, and each ratio is the median over
rounds of the DDP time against the one-process times of the same round
(``ratio_quartiles``: the spread of those per-round ratios). LeNet on 28x28 digits,
global batch 128, 4-bit weights and activations, SGD with momentum, as
``benchmarks/train_algorithms.py``.

    python -m benchmarks.train_ddp [--quick] [--procs 2] [--model lenet] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from benchmarks._timing import emit, environment, quartiles

ALGOS = {"sgd": ("fefet2", 0.0), "noise": ("fefet2", 1.0), "sam": ("fefet2", None)}


def _runner(model_name: str, image: int, algo: str, seed: int = 0):
    from xbar import models, presets
    from xbar.mapping import quantize_activations
    from xbar.training import (
        SAM,
        NoiseInjection,
        StepRunner,
        make_optimizer,
        noisy_parameters,
        other_parameters,
    )

    preset_name, sigma_scale = ALGOS[algo]
    preset = presets.load(preset_name)
    torch.manual_seed(seed)
    model = models.build(model_name, in_channels=1, num_classes=10, image_size=image)
    quantize_activations(model, 4)
    targets = noisy_parameters(model, preset)
    opt = make_optimizer(model, 0.01, 0.9, 5e-4)
    if algo == "sam":
        step = SAM(opt, targets + other_parameters(model, targets), 0.05)
    else:
        step = NoiseInjection(opt, targets, None, sigma_scale, torch.Generator().manual_seed(seed))
    return StepRunner(model, step, targets)


def _worker(rank: int, world: int, port: int, opts: dict, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from xbar import data
    from xbar.training.distributed import start

    par = start(torch.device("cpu"), seed=0)
    split = data.load("mnist5k", seed=0)
    x_all, y_all = split.train.tensors
    batch = opts["batch"]
    x, y = x_all[:batch], y_all[:batch]
    mine = par.positions(0, batch)
    xs, ys, scale, count = x[mine], y[mine], par.scale(batch), par.count(batch)
    steps, rounds = opts["steps"], opts["rounds"]
    out: dict = {}
    for algo in opts["algos"]:
        ddp = _runner(opts["model"], split.image_size, algo)
        par.attach(ddp)
        single = _runner(opts["model"], split.image_size, algo) if par.is_main else None
        def ddp_step(ddp=ddp, counter=[0]) -> None:  # noqa: B006 - the step counter of this algorithm
            par.begin_step(ddp, counter[0])
            loss, correct = ddp.train_batch(xs, ys, scale)
            par.sum([loss * count, correct, count])
            counter[0] += 1

        def timed(fn, n: int) -> float:
            fn()  # warm
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) / n * 1e3

        samples: dict[str, list[float]] = {"one_process_1_thread": [], f"one_process_{world}_threads": [], "ddp": []}
        for _ in range(rounds):
            if par.is_main:
                for threads, key in ((1, "one_process_1_thread"), (world, f"one_process_{world}_threads")):
                    torch.set_num_threads(threads)
                    samples[key].append(timed(lambda single=single: single.train_batch(x, y), steps))
                torch.set_num_threads(1)
            par.barrier()
            samples["ddp"].append(timed(ddp_step, steps))
            par.barrier()
        if par.is_main:
            entry: dict = {k: round(statistics.median(v), 3) for k, v in samples.items()}
            for key in ("one_process_1_thread", f"one_process_{world}_threads"):
                ratios = [d / s for d, s in zip(samples["ddp"], samples[key])]
                entry[f"ratio_vs_{key}"] = round(statistics.median(ratios), 3)
                entry[f"ratio_quartiles_vs_{key}"] = [round(q, 3) for q in quartiles(ratios)]
            out[algo] = entry
    if par.is_main:
        Path(result).write_text(json.dumps(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--batch", type=int, default=128, help="global batch")
    ap.add_argument("--algos", default="sgd,noise,sam")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args()
    opts = {"model": args.model, "batch": args.batch, "algos": args.algos.split(","),
            "steps": 5 if args.quick else 10, "rounds": 3 if args.quick else 7}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        mp.spawn(_worker, args=(args.procs, _free_port(), opts, str(result)), nprocs=args.procs, join=True)
        steps = json.loads(result.read_text())
    emit({
        "benchmark": "train_ddp",
        "setup": f"{args.model}, 28x28 digits (mnist5k), global batch {args.batch}, 4-bit weights and activations, "
                 f"SGD momentum 0.9, fefet2; {args.procs} gloo processes x 1 thread against one process; "
                 "ms per training step (median over rounds), ratio = DDP / one process (<1: faster)",
        "procs": args.procs,
        "cpus": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after: other work

        "step_ms": steps,
        "environment": environment(torch.device("cpu")),
    })


if __name__ == "__main__":
    main()
