"""``xbar eval``: Monte Carlo k-th percentile accuracy of a trained model (TRICE Algorithm 2)."""

from __future__ import annotations

import argparse
import math

from xbar.cli import _studies as S
from xbar.cli.common import add_preset_overrides, positive_float, positive_int
from xbar.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="Monte Carlo k-th percentile accuracy (KPP) of a trained model on a device preset",
        description="Program N noisy instances of the model with the preset's device model, evaluate each, "
        "and report the k-th percentile accuracy with a distribution-free confidence interval.",
    )
    S.add_workload_args(p)
    p.add_argument("--preset", help="device preset name or TOML file (default: the run's preset)")
    add_preset_overrides(p)
    S.add_instance_args(p, mc=1000)
    p.add_argument("--tolerance", type=positive_float, help="adaptive: double N until the interval is narrower than this")
    p.add_argument("--max-mc", type=positive_int, help="adaptive: at most this many instances (default 16 x --mc)")
    p.add_argument("--noisy-bias", action="store_true", help="program the biases on devices too (default: digital)")
    p.add_argument("--sigmas", help="sigma sweep (TRICE Table I, Fig. 5/6): comma-separated values of --sigma-field")
    p.add_argument("--sigma-field", default="sigma_d", help="preset field the sweep sets (default sigma_d)")
    p.add_argument("--compare", help="with --sigmas: comma-separated further checkpoints in the same sweep")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.evaluation import monte_carlo
    from xbar.evaluation.plots import ordinal

    if args.compare and not args.sigmas:
        raise InputError("--compare belongs to a sigma sweep: give --sigmas too")
    if args.sigmas and args.tolerance:
        raise InputError("--tolerance is for a single study, not a --sigmas sweep")
    S.check_outputs(args)
    dev = S.device_of(args)
    model, info = S.load_checkpoint(args)
    data = S.load_data(args, info)
    preset = S.resolve_preset(args, info)
    layers = S.parse_list(args.layers, str, "--layers") if args.layers else None
    if args.layers is not None and not layers:
        raise InputError(f"--layers {args.layers!r}: expected comma-separated layer names")
    if args.sigmas:
        return _sweep(args, model, info, data, preset, layers, dev)
    if args.compare or args.sigma_field != "sigma_d":
        raise InputError("--compare and --sigma-field belong to a sigma sweep: give --sigmas too")
    with S.library_errors():
        r = monte_carlo(
            model,
            data,
            preset,
            n=args.mc,
            seed=args.seed,
            percentile=args.percentile,
            confidence=args.confidence,
            tolerance=args.tolerance,
            max_n=args.max_mc,
            batch_instances=args.batch_instances,
            batch_size=args.batch_size,
            device=dev,
            layers=layers,
            noisy_bias=args.noisy_bias,
            limit=args.limit,
            progress=not args.no_progress,
        )
    result = {**r.to_dict(), **_source(args, info)}
    lo, hi = r.interval()
    k = args.percentile
    fmt = lambda v: "-inf" if v is None else f"{v:.4f}"  # noqa: E731
    text = "\n".join(
        [
            f"xbar eval: {S.header(info, r.num_images)}, preset {r.preset}, {r.n} instances (seed {args.seed})",
            f"clean accuracy      {r.clean['accuracy']:.4f} (float weights)",
            f"stored accuracy     {r.stored['accuracy']:.4f} (as the devices store it, before noise)",
            f"mean accuracy       {r.mean:.4f} (std {r.std:.4f}, min {r.per_instance['accuracy'].min():.4f})",
            f"{ordinal(k) + ' percentile':<19} {r.kpp():.4f}  (x_({result['order_statistic']}) of {r.n}; "
            f"{100 * r.confidence:g}% CI [{fmt(lo)}, {fmt(hi) if hi is not None else '+inf'}])",
            f"time                {r.seconds:.1f} s ({r.n / max(r.seconds, 1e-9):.1f} instances/s)",
        ]
    )
    return S.finish(args, result, text, plot=lambda path, force: r.plot(path, ks=sorted({1.0, 5.0, k}), force=force))


def _sweep(args, model, info, data, preset, layers, dev) -> int:
    from xbar import presets
    from xbar.cli.tables import format_table
    from xbar.evaluation import sigma_sweep

    sigmas = S.parse_list(args.sigmas, float, "--sigmas")
    if not sigmas or not all(math.isfinite(v) and v >= 0 for v in sigmas):
        raise InputError(f"--sigmas {args.sigmas!r}: expected non-negative numbers")
    for v in sigmas:  # every cell's preset is valid before any work
        try:
            presets.resolve(preset).with_overrides(**{args.sigma_field: v})
        except (InputError, ValueError) as exc:
            raise InputError(f"--sigma-field {args.sigma_field} = {v:g}: {exc}") from None
    models = {args.checkpoint: model}
    for other in S.parse_list(args.compare, str, "--compare") if args.compare else []:
        m, inf = S.load_checkpoint(args, other)
        if (inf["in_channels"], inf["image_size"]) != (info["in_channels"], info["image_size"]):
            raise InputError(f"--compare {other}: input shape differs from {args.checkpoint}")
        models[other] = m
    with S.library_errors():
        sw = sigma_sweep(
            models, data, preset, sigmas=sigmas, n=args.mc, percentile=args.percentile, parameter=args.sigma_field,
            seed=args.seed, confidence=args.confidence, batch_instances=args.batch_instances,
            batch_size=args.batch_size, device=dev, layers=layers, noisy_bias=args.noisy_bias, limit=args.limit,
            progress=not args.no_progress,
        )
    result = {**sw.to_dict(per_instance=True), **_source(args, info)}
    from xbar.evaluation.plots import ordinal

    text = "\n".join([
        f"xbar eval: sigma sweep of {args.sigma_field}, preset {sw.preset}, {args.mc} instances per cell "
        f"(seed {args.seed}); {ordinal(args.percentile)} percentile accuracy in %:",
        format_table(sw.table(), [args.sigma_field, *models]),
    ])
    return S.finish(args, result, text, plot=lambda path, force: sw.plot(path, force=force))


def _source(args: argparse.Namespace, info: dict) -> dict:
    return {
        "checkpoint": args.checkpoint,
        "model": info["model"],
        "data": info["data"],
        "split": info.get("split", "test"),
        "act_bits": info.get("act_bits", 0),
    }
