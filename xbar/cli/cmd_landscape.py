"""``xbar landscape``: loss along device-noise directions (1D) or on the plane through three models (2D), DAT Sec. III-C."""

from __future__ import annotations

import argparse

import numpy as np

from xbar.cli import _studies as S
from xbar.cli.cmd_eval import _source
from xbar.cli.common import add_preset_overrides, positive_int
from xbar.errors import InputError

MAX_GRID = 1001  # points per axis: each is a full pass over the data (per direction in 1D)


def parse_grid(text: str, what: str) -> np.ndarray:
    """``START:STOP:NUM`` (NUM points, both ends included) or a comma-separated list."""
    try:
        if ":" in text:
            a, b, n = text.split(":")
            if int(n) < 1:
                raise ValueError
            vals = np.linspace(float(a), float(b), min(int(n), MAX_GRID + 1))
        else:
            vals = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise InputError(f"{what} {text!r}: expected START:STOP:NUM or a comma-separated list of numbers") from None
    if vals.size == 0 or not np.all(np.isfinite(vals)):
        raise InputError(f"{what} {text!r}: expected at least one finite number")
    if vals.size > MAX_GRID:
        raise InputError(f"{what} {text!r}: expected at most {MAX_GRID} points (each is a pass over the data)")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "landscape",
        help="loss landscape along device-noise directions (1D) or through three models (2D)",
        description="1D: g(alpha) = loss at w + alpha d for device-noise directions d (normalised by ||d||_F). "
        "2D: g(alpha, beta) at w + alpha u + beta v with w = CHECKPOINT (SGD), u = w_A - w, v = 2 w_B - w_A - w "
        "for --models A,B.",
    )
    S.add_workload_args(p, split="train")
    p.add_argument("--preset", help="device preset for the 1D directions (default: the run's preset)")
    add_preset_overrides(p)
    p.add_argument("--dims", type=int, choices=(1, 2), default=1, help="1 (noise directions) or 2 (three models)")
    p.add_argument("--models", help="2D: the checkpoints A,B (w_A, w_B) next to CHECKPOINT (w_SGD)")
    p.add_argument("--directions", type=positive_int, default=5, help="1D: device-noise directions averaged (default 5)")
    p.add_argument("--normalize", choices=("model", "layer", "none"), default="model",
                   help="1D: d / ||d||_F over the model (the paper), per layer to ||w_l||, or raw (default model)")
    p.add_argument("--alphas", help="alpha grid START:STOP:NUM or list, e.g. --alphas=-1:1:21 (1D default +-2 noise norms, 21 points; "
                   "2D default -0.5:1.5:21)")
    p.add_argument("--betas", help="2D: beta grid (default -0.3:0.8:12)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.evaluation import landscape_1d, landscape_2d
    from xbar.evaluation.landscape import DAT_ALPHAS, DAT_BETAS

    alphas = parse_grid(args.alphas, "--alphas") if args.alphas else None
    betas = parse_grid(args.betas, "--betas") if args.betas else None
    if args.dims == 1 and (args.models or betas is not None):
        raise InputError("--models and --betas belong to --dims 2")
    others = S.parse_list(args.models, str, "--models") if args.models else []
    if args.dims == 2 and len(others) != 2:
        raise InputError("--dims 2 needs --models A,B: two more checkpoints besides CHECKPOINT")
    S.check_outputs(args)
    dev = S.device_of(args)
    model, info = S.load_checkpoint(args)
    data = S.load_data(args, info)
    common = dict(batch_instances=args.batch_instances, batch_size=args.batch_size, device=dev, limit=args.limit,
                  split=args.split, progress=not args.no_progress)
    if args.dims == 1:
        preset = S.resolve_preset(args, info)
        with S.library_errors():
            r = landscape_1d(model, data, preset, alphas=alphas, directions=args.directions, seed=args.seed,
                             normalize=args.normalize, **common)
        i0 = int(np.argmin(np.abs(r.alphas)))
        lines = [
            f"xbar landscape: {S.header(info, r.num_images)}, preset {r.preset}, {args.directions} directions, "
            f"normalize {r.normalize} (device noise ||d||_F = {r.noise_norm:.4g})",
            f"{'alpha':>10}  {'mean loss':>10}  {'min':>10}  {'max':>10}  {'accuracy':>9}",
        ]
        for j, a in enumerate(r.alphas):
            col = r.loss[:, j]
            lines.append(f"{a:10.4g}  {col.mean():10.4f}  {col.min():10.4f}  {col.max():10.4f}  {r.accuracy[:, j].mean():9.4f}")
        lines.append(f"g(0) = {r.mean_loss[i0]:.4f} at alpha = {r.alphas[i0]:.4g}")
    else:
        model_a, info_a = S.load_checkpoint(args, others[0])
        model_b, info_b = S.load_checkpoint(args, others[1])
        for other, inf in ((others[0], info_a), (others[1], info_b)):
            if inf["model"] != info["model"]:
                raise InputError(f"--models {other}: model {inf['model']!r}, but CHECKPOINT is {info['model']!r}")
        with S.library_errors():
            r = landscape_2d(model, model_a, model_b, data,
                             alphas=DAT_ALPHAS if alphas is None else alphas,
                             betas=DAT_BETAS if betas is None else betas, **common)
        ia, ib = np.unravel_index(np.nanargmin(r.loss), r.loss.shape)
        lines = [
            f"xbar landscape: {S.header(info, r.num_images)}, plane through SGD = {args.checkpoint}, "
            f"A = {others[0]}, B = {others[1]}; {r.alphas.size} x {r.betas.size} grid",
            f"loss at SGD (0, 0) {_at(r, 0, 0)}, A (1, 0) {_at(r, 1, 0)}, B (0.5, 0.5) {_at(r, 0.5, 0.5)}",
            f"lowest loss {r.loss[ia, ib]:.4f} at alpha {r.alphas[ia]:.3g}, beta {r.betas[ib]:.3g}",
        ]
    result = {**r.to_dict(), **_source(args, info)}
    if args.dims == 2:
        result["models"] = [args.checkpoint, *others]
    return S.finish(args, result, "\n".join(lines), plot=lambda path, force: r.plot(path, force=force))


def _at(r, a: float, b: float) -> str:
    ia, ib = np.where(np.isclose(r.alphas, a))[0], np.where(np.isclose(r.betas, b))[0]
    return f"{r.loss[ia[0], ib[0]]:.4f}" if ia.size and ib.size else "(off grid)"
