"""Time per training step with xbar noise injection against plain PyTorch and aihwkit.

Same model, batch and optimizer in one run; ratios are what to read (machines are
noisy, ratios hold). xbar injections: uniform (rram-uniform), per-level (fefet1),
right-censored (fefet1 + RC family), low-rank correlated (reram-correlated-a, rank 10
per tile), bit flips (hfox-bitflip, float32, p = 1e-6). aihwkit: its torch tile with the
additive Gaussian weight modifier. Targets: <= 1.2x plain on CPU, <= 1.15x on GPU
(bit flips <= 1.3x).

    python -m benchmarks.train_step [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

import xbar
from benchmarks._timing import emit, environment, time_call
from xbar import models, presets
from xbar.devices import NoiseFamily

INJECTIONS = {
    "uniform": ("rram-uniform", {}, None),
    "per-level": ("fefet1", {}, None),
    "right-censored": ("fefet1", {}, NoiseFamily("right-censored", 2.0)),
    "low-rank": ("reram-correlated-a", {"correlation.rank": 10}, None),
    "bit-flips": ("hfox-bitflip", {}, None),
}
TARGET = {"cpu": 1.2, "cuda": 1.15}


def aihwkit_model(model: nn.Module) -> nn.Module:
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import WeightModifierType

    cfg = TorchInferenceRPUConfig()
    cfg.forward.is_perfect = True
    cfg.modifier.type = WeightModifierType.ADD_NORMAL
    cfg.modifier.std_dev = 0.05
    return convert_to_analog(copy.deepcopy(model), cfg)


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, analog: bool):
    if analog:
        from aihwkit.optim import AnalogSGD

        opt = AnalogSGD(model.parameters(), lr=0.01)
        opt.regroup_param_groups(model)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def bench(name: str, image: int, channels: int, batch: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    base = models.build(name, in_channels=channels, num_classes=10, image_size=image).to(device)
    x = torch.randn(batch, channels, image, image, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    out: dict = {"model": name, "batch": batch, "ms_per_step": {}, "ratio_vs_plain": {}}
    plain = time_call(step_fn(copy.deepcopy(base), x, y, False), device, repeats)
    out["ms_per_step"]["plain"] = plain
    for label, (preset_name, overrides, family) in INJECTIONS.items():
        preset = presets.load(preset_name, **overrides)
        model = xbar.convert(base, preset).to(device)
        if family is not None:
            xbar.tiles.set_injection(model, family=family)
        t = time_call(step_fn(model, x, y, True), device, repeats)
        out["ms_per_step"][f"xbar:{label}"] = t
        out["ratio_vs_plain"][f"xbar:{label}"] = t / plain
    a = time_call(step_fn(aihwkit_model(base).to(device), x, y, True), device, max(3, repeats // 2))
    out["ms_per_step"]["aihwkit:add-normal"] = a
    out["ratio_vs_plain"]["aihwkit:add-normal"] = a / plain
    worst = max(v for k, v in out["ratio_vs_plain"].items() if k.startswith("xbar:") and k != "xbar:bit-flips")
    out["xbar_worst_ratio"] = worst
    out["xbar_speedup_vs_aihwkit"] = a / max(v for k, v in out["ms_per_step"].items() if k.startswith("xbar:"))
    out["target_ratio"] = TARGET[device.type]
    out["meets_target"] = worst <= TARGET[device.type] and out["ratio_vs_plain"]["xbar:bit-flips"] <= 1.3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, LeNet only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    repeats = 5 if args.quick else 15
    runs = [bench("lenet", 28, 1, 128 if device.type == "cpu" else 512, device, repeats)]
    if not args.quick:
        batch = 8 if device.type == "cpu" else 128
        runs.append(bench("resnet18", 32, 3, batch, device, max(3, repeats // 3)))
    emit({"benchmark": "train_step", "environment": environment(device), "results": runs})


if __name__ == "__main__":
    main()
