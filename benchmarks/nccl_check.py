"""NCCL check: Monte Carlo instances sharded over torchrun's GPU processes match one process.

Needs one GPU per process for NCCL (it refuses two ranks on one device); without
CUDA it runs the same check over gloo on the CPU:

    torchrun --nproc_per_node=2 -m benchmarks.nccl_check

Rank 0 prints JSON: whether every per-instance accuracy and loss, and the
percentile, equal those of a single-process run of the same study.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from xbar import data, models
from xbar.evaluation import monte_carlo
from xbar.evaluation.distributed import Dist, context, local_device


def main() -> int:
    device = local_device()  # the GPU of LOCAL_RANK where CUDA is present (gloo on CPU otherwise)
    dist = context(device)
    torch.manual_seed(0)
    model = models.build("lenet", in_channels=1, num_classes=10, image_size=8).to(device).eval()
    split = data.load("digits", seed=0)
    study = dict(n=256, seed=4, batch_instances=32, device=device, progress=False)
    t0 = time.perf_counter()
    sharded = monte_carlo(model, split, "fefet1", dist=dist, **study)
    t_sharded = time.perf_counter() - t0
    if dist.rank != 0:
        return 0
    t0 = time.perf_counter()
    single = monte_carlo(model, split, "fefet1", dist=Dist(), **study)
    t_single = time.perf_counter() - t0
    same = {k: bool(np.array_equal(sharded.per_instance[k], single.per_instance[k])) for k in single.per_instance}
    report = {
        "benchmark": "nccl_check",
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "world": dist.world,
        "instances": study["n"],
        "identical": same,
        "kpp_equal": sharded.kpp() == single.kpp(),
        "seconds": {"sharded": t_sharded, "single": t_single},
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(same.values()) and report["kpp_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
