"""``xbar fit``: fit a device preset (and a report) from an HDF5 measurement file."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import tomli_w

from xbar.cli.common import add_study_args, emit, positive_int
from xbar.errors import InputError

DESCRIPTION = """\
Fit a device preset from measurements in the xbar-measurements HDF5 format
(calibration/SCHEMA.md; docs/calibration.md explains every fitter).

For every group present in the file:
  /programming  per-level mean offset and sigma (TRICE Eq. 15), uniform vs per-level
                sigma chosen by likelihood ratio test and AIC -> [programming]
  /reads        read-noise sigma per level                      -> [read_noise]
  /drift        nu mean/std per level, G(t)/G(t0) = (t/t0)^-nu  -> [drift]
  /array_maps   Kronecker exponential spatial covariance (DAT)  -> [correlation]
  /switching    lognormal LRS/HRS, equal-error threshold and
                bit-flip probability (Emonds Eq. 1)             -> [bitflip]
The preset records its provenance (file name, SHA-256, sample counts, goodness of
fit). Files are written atomically; an existing file is only replaced with --force.
A bad measurement file is reported in one line with exit status 2 and nothing is
written.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a device preset from HDF5 measurements",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("measurements", metavar="MEASUREMENTS.h5", help="xbar-measurements HDF5 file")
    p.add_argument("--out", required=True, metavar="PRESET.toml", help="preset file to write")
    p.add_argument("--report", metavar="DIR", help="also write diagnostic plots and summary.md/.json here")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--name", help="preset name (default: the measurement file's stem)")
    p.add_argument(
        "--weight-bits",
        type=positive_int,
        metavar="H",
        help="weight bits of the preset's [mapping] (default: 2 x bits per device)",
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="level of the reported intervals (default 0.95)"
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance level of the uniform vs per-level sigma test (default 0.05)",
    )
    p.add_argument(
        "--no-decompose",
        action="store_true",
        help="keep raw programming sigmas (do not subtract read-noise and correlated variance)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="N",
        help="bootstrap resamples for the spatial-correlation intervals (default 200)",
    )
    add_study_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.calibration import fit, read_measurements, write_report
    from xbar.calibration.report import check_report_dir
    from xbar.calibration.result import format_table
    from xbar.fileio import atomic_write_text

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out}: already exists; pass --force to overwrite it")
    if out.exists() and out.is_dir():
        raise InputError(f"{out}: is a directory; expected a preset file name")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence {args.confidence}: expected a number in (0, 1)")
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha}: expected a number in (0, 1)")
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap {args.bootstrap}: expected >= 0")

    m = read_measurements(args.measurements)
    result = fit(
        m,
        name=args.name,
        weight_bits=args.weight_bits,
        confidence=args.confidence,
        alpha=args.alpha,
        decompose=not args.no_decompose,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    text = tomli_w.dumps(result.preset_dict)
    _validate(text, out)
    if args.report:
        check_report_dir(result, args.report, args.force)
    report_paths = write_report(result, m, args.report, args.force) if args.report else []
    atomic_write_text(out, text, force=args.force)

    table = format_table(
        result.summary_rows(),
        ("section", "quantity", "estimate", f"{args.confidence * 100:g}% interval"),
    )
    lines = [table, "", f"wrote {out}"] + [f"wrote {p}" for p in report_paths]
    emit(
        {"preset_path": str(out), "report": [str(p) for p in report_paths], **result.to_dict()},
        args.json,
        "\n".join(lines),
    )
    return 0


def _validate(text: str, out: Path) -> None:
    """The written preset must load back through ``xbar.presets`` (when it is available)."""
    try:
        from xbar.presets import Preset
    except ImportError:  # pragma: no cover - presets is part of the package
        return
    Preset.from_dict(tomllib.loads(text), origin=str(out))
