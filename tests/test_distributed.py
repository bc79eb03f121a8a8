"""Instances sharded over 2 CPU processes (gloo) give exactly the single-process results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import digits, lenet, one_thread, write_run
from xbar import models
from xbar.evaluation import bitflip_sweep, drift_study, monte_carlo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _studies(model, dist=None) -> dict[str, np.ndarray]:
    split = digits()
    cpu = dict(device="cpu", limit=120, progress=False, dist=dist)  # 2 CPU processes, also on a GPU machine
    mc = monte_carlo(model, split, "rram-uniform", n=11, seed=4, batch_instances=3, **cpu)
    dr = drift_study(model, split, "pcm", times=[1.0, 86400.0], n=5, seed=4, batch_instances=2, **cpu)
    bf = bitflip_sweep(model, split, "float16", p=[1e-4, 1e-2], repeats=3, targets=["weights", "activations"],
                       seed=4, fit=False, **cpu)
    return {
        "mc_acc": mc.per_instance["accuracy"],
        "mc_loss": mc.per_instance["loss"],
        "mc_idx": mc.indices,
        "drift": dr.accuracy,
        "drift_loss": dr.loss,
        "bf_acc": bf.accuracy,
        "bf_flips": bf.flips["activations"],
    }


def _worker(rank: int, world: int, port: int, state_path: str, out_path: str) -> None:
    import torch.distributed as tdist

    from xbar.evaluation.distributed import context

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model = models.build("lenet", in_channels=1, num_classes=10, image_size=8)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model.eval()
    d = context("cpu")
    assert d.world == world and d.rank == rank and d.shard(range(7)) == list(range(7))[rank::world]
    res = _studies(model)  # every study picks the context up from the environment
    if rank == 0:
        np.savez(out_path, **res)
    tdist.barrier()
    tdist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    model = lenet()
    state = tmp_path / "state.pt"
    torch.save(model.state_dict(), state)
    out = tmp_path / "dist.npz"
    mp.spawn(_worker, args=(2, _free_port(), str(state), str(out)), nprocs=2, join=True)
    with one_thread():
        single = _studies(model)
    got = np.load(out)
    for key, value in single.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_torchrun_cli_matches_single_process(tmp_path):
    run = write_run(tmp_path / "run", lenet())
    torchrun = Path(sys.executable).parent / "torchrun"
    xbar = Path(sys.executable).parent / "xbar"
    if not torchrun.exists() or not xbar.exists():
        pytest.skip("torchrun or the xbar console script is not installed")
    args = ["eval", str(run), "--mc", "7", "--batch-instances", "2", "--limit", "100", "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", str(xbar), *args, "--out", str(tmp_path / "two.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([str(xbar), *args], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    a = json.loads((tmp_path / "two.json").read_text())
    b = json.loads(one.stdout)
    assert a["per_instance"] == b["per_instance"]
    assert a["kpp"] == b["kpp"] and a["n"] == 7
