"""``xbar import-arc2``: convert an ArC TWO session (ArC2Control data store) for ``xbar fit``.

The command-line face of ``xbar.calibration.import_arc2``; the mapping is stated in
``calibration/SCHEMA.md`` ("ArC TWO data stores").
"""

from __future__ import annotations

import argparse

from xbar.cli.common import emit, positive_float

GROUP_NAMES = ("programming", "reads", "drift", "array_maps", "switching")

DESCRIPTION = """\
Convert an ArC TWO session, the HDF5 data store ArC2Control saves, into a validated
xbar-measurements file for `xbar fit` (calibration/SCHEMA.md, "ArC TWO data stores").

  conductance   |current / read_voltage| of every read, in siemens
  /programming  the read that ends each programming (write-verify) sequence of a
                crosspoint named in the plan (pulses at most one read apart form one
                sequence); the plan gives its target level
  /reads        runs of two or more reads after a sequence, cut to a common length
  /drift        Retention tables (read_voltage, current, tstamp_s, tstamp_us) of planned
                crosspoints; time since programming = --retention-delay-s + time since
                the table's first read
  /array_maps   with --array-map only: the /crossbar raster (the latest read of every
                crosspoint, e.g. a Read All) over the planned rectangle, in level units,
                minus the last planned target of each crosspoint (one map; a spatial
                fit of one small map has no interval and can be far off)
  /switching    reads after the pulses of crosspoints not in the plan that were pulsed
                with both polarities: the polarity with the lower median resistance is
                SET (LRS), the other RESET (HRS)

The plan is a CSV table word,bit,target_level,level_conductance_uS[,cycle] (header row,
'#' comments): the target level of every programmed crosspoint (and cycle) and the
nominal conductance of each level, which ArC2Control does not store. The output is
written atomically and only if the whole store is valid; a problem is reported in one
line naming the file and field (exit status 2) and nothing is written.
"""


def _groups(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in GROUP_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"{','.join(bad)}: expected group names among {','.join(GROUP_NAMES)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-arc2",
        help="convert an ArC TWO session (ArC2Control HDF5) into an xbar-measurements file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", metavar="SESSION.h5", help="the ArC2Control data store")
    p.add_argument("--out", required=True, metavar="MEAS.h5", help="xbar-measurements file to write")
    p.add_argument("--plan", metavar="PLAN.csv",
                   help="experiment plan: word,bit,target_level,level_conductance_uS[,cycle] (without it only "
                        "SET/RESET cycling is imported)")
    p.add_argument("--retention-delay-s", type=positive_float, default=1.0, metavar="S",
                   help="time from the end of programming to a retention table's first read (default 1 s)")
    p.add_argument("--array-map", action="store_true",
                   help="also write the /crossbar raster over the planned rectangle as /array_maps")
    p.add_argument("--skip", type=_groups, default=[], metavar="GROUP,...",
                   help=f"groups not to write ({', '.join(GROUP_NAMES)})")
    p.add_argument("--device", help="the file's device description (default: the store's title and size)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbar.calibration import import_arc2, read_measurements

    out = import_arc2(
        args.session,
        args.out,
        plan=args.plan,
        force=args.force,
        retention_delay_s=args.retention_delay_s,
        array_map=args.array_map,
        skip=args.skip,
        device=args.device,
    )
    m = read_measurements(out)
    sizes = {
        "programming": [m.programming.conductance.size] if m.programming else None,
        "reads": list(m.reads.conductance.shape) if m.reads else None,
        "drift": list(m.drift.conductance.shape) if m.drift else None,
        "array_maps": list(m.array_maps.maps.shape) if m.array_maps else None,
        "switching": [m.switching.lrs_resistance_ohm.size, m.switching.hrs_resistance_ohm.size] if m.switching else None,
    }
    what = {
        "programming": "programming rows",
        "reads": "devices x reads",
        "drift": "devices x read times",
        "array_maps": "maps x word lines x bit lines",
        "switching": "LRS, HRS reads",
    }
    lines = [f"wrote {out} ({m.levels} levels)"]
    sep = {"switching": ", "}
    lines += [f"  /{g}: {sep.get(g, ' x ').join(str(int(n)) for n in sizes[g])} {what[g]}" for g in m.groups]
    emit(
        {"path": str(out), "groups": m.groups, "levels": m.levels, "sha256": m.source_sha256,
         "sizes": {g: [int(n) for n in sizes[g]] for g in m.groups}},
        args.json,
        "\n".join(lines),
    )
    return 0
