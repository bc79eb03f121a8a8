"""``xbar fit``: fit a device preset (and a report) from an HDF5 measurement file.

Also ``xbar import-csv``: convert a CSV table into an ``xbar-measurements`` file
(the layouts of ``calibration/SCHEMA.md``), the command-line face of
``xbar.calibration.import_csv``.
"""

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
Every output path (the preset and each report file) is checked before the fit
starts; a bad measurement file or an output that cannot be written is reported in
one line with exit status 2 and nothing is written. A CSV table is converted first
with `xbar import-csv`.
"""

CSV_DESCRIPTION = """\
Convert a CSV table (header row, '#' comment lines and blank lines skipped, extra
columns ignored) into a validated xbar-measurements HDF5 file for `xbar fit`.
Layouts (calibration/SCHEMA.md):
  programming  device_id,array,row,col,cycle,target_level,conductance_uS
               (target_level and conductance_uS required)
  reads        device_id,target_level,conductance_uS   one row per read
  switching    state,resistance_ohm                    state LRS or HRS
programming and reads need --level-conductance-uS (the nominal conductance of each
level). The file is written atomically and only if every row is valid; a bad row is
reported in one line naming the file, the line and the column (exit status 2).
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

    c = subparsers.add_parser(
        "import-csv",
        help="convert a CSV table into an xbar-measurements HDF5 file",
        description=CSV_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("csv", metavar="TABLE.csv", help="CSV table with a header row")
    c.add_argument("--out", required=True, metavar="MEASUREMENTS.h5", help="HDF5 file to write")
    c.add_argument("--kind", choices=("programming", "reads", "switching"), default="programming",
                   help="layout of the table (default programming)")
    c.add_argument("--level-conductance-uS", type=float_list, metavar="G0,G1,...", dest="level_conductance_uS",
                   help="nominal conductance of each level in uS (programming and reads)")
    c.add_argument("--levels", type=positive_int, help="number of levels (default: one per --level-conductance-uS value)")
    c.add_argument("--device", help="the file's device description (default: the CSV file's stem)")
    c.add_argument("--force", action="store_true", help="overwrite an existing output file")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=run_import)


def float_list(value: str) -> list[float]:
    """``"10,20,30"`` -> ``[10.0, 20.0, 30.0]`` (argparse type)."""
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None


def run_import(args: argparse.Namespace) -> int:
    from xbar.calibration import import_csv, read_measurements

    out = import_csv(
        args.csv,
        args.out,
        kind=args.kind,
        levels=args.levels,
        level_conductance_uS=args.level_conductance_uS,
        device=args.device,
        force=args.force,
    )
    m = read_measurements(out)
    emit(
        {"path": str(out), "groups": m.groups, "levels": m.levels, "sha256": m.source_sha256},
        args.json,
        f"wrote {out} ({', '.join('/' + g for g in m.groups)}, {m.levels} levels)",
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from xbar.calibration import fit, read_measurements, write_report
    from xbar.calibration.report import check_report_dir
    from xbar.calibration.result import format_table
    from xbar.fileio import atomic_write_text, check_writable

    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence {args.confidence}: expected a number in (0, 1)")
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha}: expected a number in (0, 1)")
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap {args.bootstrap}: expected >= 0")
    out = check_writable(args.out, args.force, create=False)

    m = read_measurements(args.measurements)
    if args.report:  # every output is checked before any work: a failure writes nothing
        report_paths = check_report_dir(m.groups, args.report, args.force)
        if out.resolve() in {p.resolve() for p in report_paths}:
            raise InputError(f"{out}: is also a file of the report in {args.report}; expected another name")
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
    atomic_write_text(out, text, force=args.force)
    report_paths = write_report(result, m, args.report, args.force) if args.report else []

    table = format_table(
        result.summary_rows(),
        ("section", "quantity", "estimate", f"{args.confidence * 100:g}% interval"),
    )
    notes = [f"note: {n}" for n in result.notes]
    lines = [table, "", *notes, f"wrote {out}"] + [f"wrote {p}" for p in report_paths]
    emit(
        {"preset_path": str(out), "report": [str(p) for p in report_paths], **result.to_dict()},
        args.json,
        "\n".join(lines),
    )
    return 0


def _validate(text: str, out: Path) -> None:
    """The written preset must load back through ``xbar.presets``."""
    from xbar.presets import Preset

    Preset.from_dict(tomllib.loads(text), origin=str(out))
