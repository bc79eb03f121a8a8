"""Monte Carlo speed: xbar's engine against aihwkit and a plain PyTorch loop; bit-flip injection cost.

Prints one JSON object:

* ``lenet_mnist5k``: instances per second of a LeNet evaluated on the 1,000 test digits
  of ``mnist5k``: xbar's ``monte_carlo`` (presets ``pcm`` and ``rram-uniform``), a plain
  PyTorch loop that resamples the weights with the same device model and evaluates one
  instance at a time, and aihwkit 1.1.0 (``convert_to_analog`` with a
  ``TorchInferenceRPUConfig`` and ``PCMLikeNoiseModel``; ``program_analog_weights()``
  then the evaluation loop), with the ratios (targets: >= 20x aihwkit, >= 1x plain loop);
* ``cuda_kpp_10000`` (CUDA only): the 10,000-instance 1st-percentile KPP of LeNet over
  10,000 MNIST-sized images;
* ``bitflip_resnet18``: one forward of ResNet-18 (CIFAR shape) with bit flips at
  p = 1e-6 on weights and activations (float32) against a clean forward of the same images.

Run from the repository root: ``python -m benchmarks.monte_carlo [--quick] [--device cuda]``.
Timings are the best of ``--repeats`` runs (other processes share the CPU cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
from torch import nn


def _best(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _rate(n: int, seconds: float) -> dict:
    return {"instances": n, "seconds": round(seconds, 4), "instances_per_second": round(n / seconds, 3)}


def lenet_mnist5k(n_xbar: int, n_plain: int, n_aihwkit: int, repeats: int, device: torch.device) -> dict:
    from xbar import data, models, presets
    from xbar.evaluation import monte_carlo

    split = data.load("mnist5k")
    torch.manual_seed(0)
    model = models.build("lenet").eval()
    x, y = split.test.tensors
    out: dict = {"images": int(len(y)), "device": str(device)}

    xbar_rates = {}
    for preset in ("pcm", "rram-uniform"):
        def run(preset=preset):
            monte_carlo(model, (x, y), preset, n=n_xbar, seed=0, device=device, metrics=("accuracy",),
                        progress=False)

        xbar_rates[preset] = _rate(n_xbar, _best(run, repeats))
    out["xbar"] = xbar_rates

    # plain PyTorch: resample every Conv/Linear weight with the same device model, one instance at a time
    dm = presets.load("pcm").device_model()
    plain_model = models.build("lenet").eval().to(device)
    plain_model.load_state_dict(model.state_dict())
    layers = [m for m in plain_model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    clean = [m.weight.detach().clone() for m in layers]
    xd, yd = x.to(device), y.to(device)

    def plain():
        with torch.no_grad():
            for i in range(n_plain):
                g = torch.Generator(device=device).manual_seed(i)
                for m, w in zip(layers, clean):
                    m.weight.copy_(dm.program(w, 1, g)[0])
                correct = 0
                for s in range(0, len(yd), 256):
                    correct += int((plain_model(xd[s : s + 256]).argmax(1) == yd[s : s + 256]).sum())

    out["plain_loop"] = _rate(n_plain, _best(plain, repeats))

    # aihwkit: program_analog_weights() + evaluation, one instance at a time
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    cfg = TorchInferenceRPUConfig()
    cfg.noise_model = PCMLikeNoiseModel(g_max=25.0)
    analog = convert_to_analog(model, cfg).eval().to(device)

    def aihwkit():
        with torch.no_grad():
            for _ in range(n_aihwkit):
                analog.program_analog_weights()
                correct = 0
                for s in range(0, len(yd), 256):
                    correct += int((analog(xd[s : s + 256]).argmax(1) == yd[s : s + 256]).sum())

    out["aihwkit"] = _rate(n_aihwkit, _best(aihwkit, 1))
    ours = xbar_rates["pcm"]["instances_per_second"]
    out["speedup_vs_aihwkit"] = round(ours / out["aihwkit"]["instances_per_second"], 2)
    out["speedup_vs_plain_loop"] = round(ours / out["plain_loop"]["instances_per_second"], 3)
    out["targets"] = {"speedup_vs_aihwkit": 20.0, "speedup_vs_plain_loop": 1.0}
    return out


def cuda_kpp(n: int, images: int) -> dict:
    from xbar import models
    from xbar.evaluation import monte_carlo

    torch.manual_seed(0)
    model = models.build("lenet").eval()
    x = torch.randn(images, 1, 28, 28)
    y = torch.randint(0, 10, (images,))
    t0 = time.perf_counter()
    r = monte_carlo(model, (x, y), "rram-uniform", n=n, device="cuda", batch_size=1000, progress=False)
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"instances": n, "images": images, "seconds": round(sec, 2), "instances_per_second": round(n / sec, 1),
            "kpp_1": r.kpp(1), "gpu": torch.cuda.get_device_name()}


def bitflip_resnet18(images: int, repeats: int, device: torch.device) -> dict:
    from xbar import models
    from xbar.evaluation import StackedModel, as_batches, bitflip_sweep, evaluate

    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    x = torch.randn(images, 3, 32, 32)
    y = torch.randint(0, 10, (images,))
    batches = as_batches((x, y), images, device)
    stacked = StackedModel(model, layers=[], device=device)
    clean = _best(lambda: evaluate(stacked, batches, 1), repeats)

    def flipped():
        bitflip_sweep(model, (x, y), "float32", p=[1e-6], repeats=1, targets=["weights", "activations"],
                      batch_size=images, device=device, fit=False, baseline=False, progress=False)

    flip = _best(flipped, repeats)
    return {"images": images, "p": 1e-6, "targets": ["weights", "activations"], "storage": "float32",
            "clean_seconds": round(clean, 4), "bitflip_seconds": round(flip, 4),
            "overhead_ratio": round(flip / clean, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer instances and images (a smoke run)")
    ap.add_argument("--device", default="cpu", help="device of the LeNet and ResNet-18 runs (default cpu)")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats, best kept (default 3, quick 1)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 3)
    n_xbar, n_plain, n_aihwkit = (8, 8, 2) if args.quick else (64, 64, 6)
    result: dict = {
        "benchmark": "monte_carlo",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "lenet_mnist5k": lenet_mnist5k(n_xbar, n_plain, n_aihwkit, repeats, device),
    }
    if torch.cuda.is_available():
        result["cuda_kpp_10000"] = cuda_kpp(1000 if args.quick else 10000, 10000)
    else:
        result["cuda_kpp_10000"] = None
        result["cuda_note"] = "no CUDA device: the 10,000-instance KPP run was skipped"
    result["bitflip_resnet18"] = bitflip_resnet18(16 if args.quick else 64, repeats, device)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
