"""``xbar drift``: accuracy percentiles against time after programming, with and without drift compensation."""

from __future__ import annotations

import argparse
import re

from xbar.cli import _studies as S
from xbar.cli.cmd_eval import _source
from xbar.cli.common import add_preset_overrides
from xbar.errors import InputError

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "mo": 30 * 86400.0, "y": 365 * 86400.0}


def parse_times(text: str) -> list[float]:
    """Comma-separated times: seconds (``3600``) or with a unit (``1s, 1h, 1d, 1w, 1mo, 1y``)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([0-9.eE+-]+)\s*(s|min|m|h|d|w|mo|y)?", part)
        try:
            value = float(m.group(1)) * _UNITS[m.group(2) or "s"] if m else None
        except ValueError:
            value = None
        if value is None or not value >= 0 or value == float("inf"):
            raise InputError(f"--times {text!r}: {part!r} is not a time >= 0 (seconds, or with unit s/h/d/w/mo/y)")
        out.append(value)
    if not out:
        raise InputError(f"--times {text!r}: expected at least one time")
    if len(set(out)) != len(out):
        raise InputError(f"--times {text!r}: a time is given twice")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drift",
        help="accuracy percentiles of programmed instances read at later times (drift + read noise)",
        description="Program N instances once, read them at each time with drift and read noise, "
        "with and without global drift compensation, and report accuracy percentiles against time.",
    )
    S.add_workload_args(p)
    p.add_argument("--preset", help="device preset with drift (default: the run's preset)")
    add_preset_overrides(p)
    p.add_argument("--times", default="1,3600,86400,2592000,31536000,315360000",
                   help="comma-separated read times in seconds or with units, e.g. 1s,1h,1d,1mo,1y,10y "
                   "(default 1 s, 1 h, 1 day, 1 month, 1 year, 10 years)")
    S.add_instance_args(p, mc=100)
    p.add_argument("--no-compensation", action="store_true", help="only without global drift compensation")
    p.add_argument("--compensation-only", action="store_true", help="only with global drift compensation")
    p.add_argument("--no-read-noise", action="store_true", help="drift only, no read noise")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from xbar.evaluation import drift_study
    from xbar.evaluation.drift import time_label
    from xbar.evaluation.plots import ordinal

    if args.no_compensation and args.compensation_only:
        raise InputError("--no-compensation and --compensation-only exclude each other")
    times = parse_times(args.times)
    S.check_outputs(args)
    dev = S.device_of(args)
    model, info = S.load_checkpoint(args)
    data = S.load_data(args, info)
    preset = S.resolve_preset(args, info)
    if preset.drift is None and preset.read_noise is None:
        print(f"xbar drift: note: preset {preset.name} has neither drift nor read noise; "
              "every time reads the programmed state", file=sys.stderr)
    comps = [False] if args.no_compensation else [True] if args.compensation_only else [True, False]
    layers = S.parse_list(args.layers, str, "--layers") if args.layers else None
    with S.library_errors():
        r = drift_study(
            model, data, preset, times=times, n=args.mc, seed=args.seed, percentile=args.percentile,
            confidence=args.confidence, compensation=comps, read_noise=not args.no_read_noise,
            batch_instances=args.batch_instances, batch_size=args.batch_size, device=dev, layers=layers,
            limit=args.limit, progress=not args.no_progress,
        )
    result = {**r.to_dict(), **_source(args, info)}
    k = args.percentile
    lines = [
        f"xbar drift: {S.header(info, r.num_images)}, preset {r.preset}, {r.n} instances (seed {args.seed})",
        f"clean accuracy {r.clean['accuracy']:.4f}",
        f"{'time':>10}  {'compensation':>12}  {'mean':>7}  {'std':>7}  {ordinal(k) + ' pct':>9}  CI",
    ]
    for row in r.table():
        lo, hi = row["kpp_interval"]
        ci = f"[{'-inf' if lo is None else f'{lo:.4f}'}, {'+inf' if hi is None else f'{hi:.4f}'}]"
        lines.append(
            f"{time_label(row['time_s']):>10}  {'global' if row['compensation'] else 'none':>12}  "
            f"{row['mean']:7.4f}  {row['std']:7.4f}  {row['kpp']:9.4f}  {ci}"
        )
    return S.finish(args, result, "\n".join(lines), plot=lambda path, force: r.plot(path, force=force))
