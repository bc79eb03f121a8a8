"""``xbar bitflip``: accuracy against bit-flip probability, midpoint noise levels (Emonds Eq. 2, Tables 2/4/5)."""

from __future__ import annotations

import argparse
import math

from xbar.cli import _studies as S
from xbar.cli.cmd_eval import _source
from xbar.cli.common import positive_int, probability
from xbar.cli.tables import format_table
from xbar.errors import InputError

DTYPES = ("float32", "float16", "bfloat16", "float64", "int8")


def parse_mask(text: str, storage: str):
    """A ``BitFlipModel`` mask from text: all|sign|exponent|mantissa, ``msb:N`` (Fig. 4 thermometer,
    N MSBs protected) or bit ranges ``LO-HI[+LO-HI...]`` (bit 0 = LSB; ``none`` for no bits).
    Raises ValueError on text of none of these forms or a mask the storage does not have."""
    from xbar.devices.bitflip import BitFlipModel

    t = text.strip()
    if t in ("all", "sign", "exponent", "mantissa"):
        mask = t
    elif t == "none":
        mask = ()
    elif t.startswith("msb:"):
        try:
            n = int(t[4:])
        except ValueError:
            raise ValueError(f"mask {text!r}: expected msb:N with an integer N") from None
        mask = BitFlipModel.thermometer(storage, n).mask
    else:
        ranges = []
        for part in t.split("+"):
            lo, sep, hi = part.partition("-")
            try:
                ranges.append((int(lo), int(hi if sep else lo)))
            except ValueError:
                raise ValueError(
                    f"mask {text!r}: expected all, sign, exponent, mantissa, none, msb:N or bit ranges like 0-22+31-31"
                ) from None
        mask = tuple(ranges)
    return BitFlipModel(0.0, 0.0, storage, mask).mask


def ratio(value: str) -> float:
    """argparse type of ``--p10-ratio``: a number in [0, inf] (``inf`` allowed)."""
    try:
        r = float(value)
    except ValueError:
        r = math.nan
    if math.isnan(r) or r < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a ratio in [0, inf]")
    return r


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bitflip",
        help="bit-flip sweep over p with the logistic midpoint fit (Emonds et al.)",
        description="Store weights/biases/activations in a number format, flip bits with probability p "
        "(Eq. 3) over a log grid, and fit Eq. 2 for the midpoint noise level. Several --dtype values "
        "or --mask options give one sweep each and a midpoint table (Tables 2, 4, 5).",
    )
    S.add_workload_args(p)
    p.add_argument("--dtype", default="float32",
                   help=f"storage format(s), comma-separated: {', '.join(DTYPES)} (default float32)")
    p.add_argument("--p-min", type=probability, default=1e-8, help="smallest p (default 1e-8)")
    p.add_argument("--p-max", type=probability, default=1e-1, help="largest p (default 1e-1)")
    p.add_argument("--points-per-decade", type=positive_int, default=2,
                   help="grid points per decade of p (default 2; with 1, a steep drop may fall between two points and leave the midpoint unidentified)")
    p.add_argument("--repeats", type=positive_int, default=5, help="instances per p (default 5, as the paper)")
    p.add_argument("--p10-ratio", type=ratio, default=1.0, metavar="R",
                   help="directional flips: p(1->0) / p(0->1) = R, the swept p being the larger of the two "
                   "(default 1: symmetric, as the paper; 0: only 0->1 flips; inf: only 1->0 flips)")
    p.add_argument("--targets", default="activations",
                   help="comma-separated: weights, biases, activations (default activations, as the paper)")
    p.add_argument("--mask", action="append",
                   help="bits that may flip: all, sign, exponent, mantissa, none, msb:N (Fig. 4: the N most "
                   "significant bits protected) or ranges LO-HI[+LO-HI] with bit 0 the LSB; repeat for a mask sweep")
    p.add_argument("--sites", help="comma-separated modules whose outputs are flipped (default: every Conv/Linear)")
    p.add_argument("--layers", help="comma-separated layers whose weights/biases are flipped (default: every Conv/Linear)")
    p.add_argument("--reference", help="label of the sweep that improvements are relative to (default: the float32 one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.evaluation import bitflip_sweep, midpoint_table, p_grid
    from xbar.evaluation.plots import plot_bitflip

    dtypes = S.parse_list(args.dtype, str, "--dtype")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise InputError(f"--dtype {args.dtype!r}: expected a comma-separated subset of {', '.join(DTYPES)}")
    targets = S.parse_list(args.targets, str, "--targets")
    if not targets or any(t not in ("weights", "biases", "activations") for t in targets):
        raise InputError(f"--targets {args.targets!r}: expected a comma-separated subset of weights, biases, activations")
    if not 0 < args.p_min < args.p_max:
        raise InputError(f"--p-min {args.p_min:g} / --p-max {args.p_max:g}: expected 0 < p-min < p-max <= 1")
    with S.library_errors():
        grid = p_grid(args.p_min, args.p_max, args.points_per_decade)
    masks = args.mask or ["all"]
    sweeps = []
    for d in dtypes:
        for m in masks:
            try:
                mask = parse_mask(m, d)
            except ValueError as exc:
                raise InputError(f"--mask {m!r} for --dtype {d}: {exc}") from None
            label = d if len(masks) == 1 else (f"{d} {m}" if len(dtypes) > 1 else m)
            sweeps.append((label, d, mask))
    if args.layers and not {"weights", "biases"} & set(targets):
        raise InputError(f"--layers {args.layers!r}: applies to --targets weights or biases, not {args.targets!r}")
    if args.sites and "activations" not in targets:
        raise InputError(f"--sites {args.sites!r}: applies to --targets activations, not {args.targets!r}")
    labels = [lab for lab, _, _ in sweeps]
    if args.reference and args.reference not in labels:
        raise InputError(f"--reference {args.reference!r}: expected one of {', '.join(labels)}")
    S.check_outputs(args)
    dev = S.device_of(args)
    model, info = S.load_checkpoint(args)
    data = S.load_data(args, info)
    sites = S.parse_list(args.sites, str, "--sites") if args.sites else None
    layers = S.parse_list(args.layers, str, "--layers") if args.layers else None
    results = {}
    with S.library_errors():
        for label, d, mask in sweeps:
            results[label] = bitflip_sweep(
                model, data, storage=d, p=grid, repeats=args.repeats, targets=targets, mask=mask,
                p10_ratio=args.p10_ratio, seed=args.seed,
                num_classes=info["num_classes"], activation_sites=sites, layers=layers,
                batch_instances=args.batch_instances, batch_size=args.batch_size, device=dev, limit=args.limit,
                progress=not args.no_progress,
            )
    ref = args.reference or next((lab for lab, d, _ in sweeps if d == "float32"), None)
    table = midpoint_table(results, reference=ref if len(results) > 1 else None)
    result = {
        "study": "bitflip",
        **_source(args, info),
        "targets": targets,
        "p": [float(v) for v in grid],
        "repeats": args.repeats,
        "p10_ratio": args.p10_ratio,
        "seed": args.seed,
        "reference": ref if len(results) > 1 else None,
        "table": table,
        "sweeps": {lab: r.to_dict() for lab, r in results.items()},
    }
    first = next(iter(results.values()))
    lines = [
        f"xbar bitflip: {S.header(info, first.num_images)}, targets {', '.join(targets)}, "
        f"{grid.size} p values x {args.repeats} repeats (seed {args.seed})"
        + ("" if args.p10_ratio == 1 else f", p(1->0) / p(0->1) = {args.p10_ratio:g}")
    ]
    for lab, r in results.items():
        lines.append(f"\n{lab}: baseline accuracy {r.baseline['accuracy']:.4f}")
        cols = ["p", "accuracy_mean", "accuracy_std"] + [f"flips_{t}" for t in targets]
        cols += [f"expected_flips_{t}" for t in targets] if args.p10_ratio == 1 else ["p_0to1", "p_1to0"]
        lines.append(format_table(r.table(), cols))
    lines.append("\nmidpoint noise level (Eq. 2 fit):")
    cols = ["label", "midpoint_p", "midpoint_interval", "p_99_percent_of_peak", "a_max"]
    if len(results) > 1:
        cols.append("improvement")
    lines.append(format_table(table, cols))
    for row in table:
        if not row["converged"]:
            lines.append(f"{row['label']}: no midpoint ({row['reason']})")
    return S.finish(args, result, "\n".join(lines), plot=lambda path, force: plot_bitflip(results, path, force=force))
