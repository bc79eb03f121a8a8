"""Import a plain CSV table into an ``xbar-measurements`` file (layouts in calibration/SCHEMA.md).

Layouts (header row required, extra columns ignored, ``#`` comment lines and blank
lines skipped; errors name the physical line of the file, counting those):

* ``kind="programming"``: ``device_id,array,row,col,cycle,target_level,conductance_uS``
  (``target_level`` and ``conductance_uS`` required, the integer coordinates optional);
* ``kind="reads"``: ``device_id,target_level,conductance_uS`` with one row per read
  (every device read the same number of times, in file order);
* ``kind="switching"``: ``state,resistance_ohm`` with state ``LRS`` or ``HRS``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from xbar.calibration.reader import read_measurements
from xbar.calibration.schema import MAX_ROWS, Measurements, Programming, Reads, Switching
from xbar.calibration.writer import _write
from xbar.errors import InputError
from xbar.fileio import atomic_write, check_writable

KINDS = {
    "programming": (("target_level", "conductance_uS"), ("device_id", "array", "row", "col", "cycle")),
    "reads": (("device_id", "target_level", "conductance_uS"), ()),
    "switching": (("state", "resistance_ohm"), ()),
}
_INT_COLS = {"device_id", "array", "row", "col", "cycle", "target_level", "word", "bit"}


def _read_table(path: Path, required: Sequence[str], optional: Sequence[str]) -> dict[str, list]:
    try:
        fh = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    with fh:
        reader = csv.reader(fh)
        rows = _data_rows(reader)
        try:
            _, header = next(rows)
            header = [h.strip() for h in header]
        except StopIteration:
            raise InputError(f"{path}: empty file; expected a header row with {','.join(required)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: line {reader.line_num + 1}: not a CSV table ({exc})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(
                f"{path}: header: missing column(s) {', '.join(missing)}; expected {','.join(required)}"
            )
        cols = [c for c in (*required, *optional) if c in header]
        idx = {c: header.index(c) for c in cols}
        out: dict[str, list] = {c: [] for c in cols}
        lines: list[int] = []
        try:
            for line_no, row in rows:
                if len(out[cols[0]]) >= MAX_ROWS:
                    raise InputError(f"{path}: more than {MAX_ROWS:.0e} rows; expected fewer")
                if len(row) < len(header):
                    raise InputError(f"{path}: line {line_no}: {len(row)} fields; expected {len(header)}")
                for c in cols:
                    out[c].append(_parse(path, line_no, c, row[idx[c]].strip()))
                lines.append(line_no)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: line {reader.line_num + 1}: not a CSV table ({exc})") from None
    if not out[cols[0]]:
        raise InputError(f"{path}: no data rows; expected at least one row after the header")
    out["_line"] = lines  # the physical line of each row, for later messages
    return out


def _data_rows(reader):
    """``(line, fields)`` of every row that is not blank or a ``#`` comment.

    ``line`` is the physical line (1-based) the row starts on, counting blank and
    comment lines and the lines of quoted fields that span several.
    """
    end = 0
    for r in reader:
        start, end = end + 1, reader.line_num
        if any(f.strip() for f in r) and not r[0].lstrip().startswith("#"):
            yield start, r


def _parse(path: Path, line: int, col: str, text: str):
    if col == "state":
        s = text.upper()
        if s not in ("LRS", "HRS"):
            raise InputError(f"{path}: line {line}: state = {text!r}; expected LRS or HRS")
        return s
    try:
        v = int(text) if col in _INT_COLS else float(text)
    except ValueError:
        what = "an integer" if col in _INT_COLS else "a number"
        raise InputError(f"{path}: line {line}: {col} = {text!r}; expected {what}") from None
    if col not in _INT_COLS and not np.isfinite(v):
        raise InputError(f"{path}: line {line}: {col} = {text!r}; expected a finite number")
    if col == "resistance_ohm" and not v > 0:
        raise InputError(f"{path}: line {line}: {col} = {text!r}; expected a resistance > 0 ohm")
    if col == "target_level" and v < 0:
        raise InputError(f"{path}: line {line}: {col} = {text!r}; expected a level >= 0")
    return v


def import_csv(
    csv_path: str | os.PathLike,
    out_h5: str | os.PathLike,
    kind: str = "programming",
    *,
    levels: int | None = None,
    level_conductance_uS: Sequence[float] | None = None,
    device: str | None = None,
    created: str | None = None,
    force: bool = False,
) -> Path:
    """Convert ``csv_path`` (layout of ``kind``) into a validated ``xbar-measurements`` file.

    Args:
        levels: number of levels (default: one per ``level_conductance_uS`` value).
        level_conductance_uS: nominal conductance of each level (required for
            programming and reads, which convert microsiemens to level units with it).
        device: the root ``device`` attribute (default: the CSV file's stem).
        created: the root ``created`` attribute (default: now, ISO 8601 UTC).
        force: overwrite ``out_h5`` if it exists.

    The file is written atomically and read back through the validating reader before
    it replaces ``out_h5``; on any problem nothing is written.
    """
    src = Path(csv_path)
    if kind not in KINDS:
        raise InputError(f"kind = {kind!r}: expected one of {', '.join(KINDS)}")
    check_writable(out_h5, force, create=False)
    table = _read_table(src, *KINDS[kind])
    meta = {
        "device": device or src.stem,
        "created": created or datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    if kind == "switching":
        state = np.array(table["state"])
        r = np.asarray(table["resistance_ohm"], dtype=np.float64)
        m = Measurements(
            **meta, levels=2, switching=Switching(r[state == "LRS"], r[state == "HRS"])
        )
    else:
        target = np.asarray(table["target_level"], dtype=np.int64)
        if level_conductance_uS is None:
            n = int(levels) if levels is not None else int(target.max()) + 1
            raise InputError(
                f"{src}: level_conductance_uS is required to convert conductance_uS to level units "
                f"(one nominal conductance per level, {n} values)"
            )
        nominal = np.asarray(level_conductance_uS, dtype=np.float64)
        L = int(levels) if levels is not None else nominal.size  # one nominal conductance per level
        if target.max() >= L:
            row = int(np.argmax(target >= L))
            raise InputError(
                f"{src}: line {table['_line'][row]}: target_level = {int(target[row])}; expected a level "
                f"in 0..{L - 1} ({'levels' if levels is not None else 'one level_conductance_uS value per level'})"
            )
        g = np.asarray(table["conductance_uS"], dtype=np.float64)
        if kind == "programming":
            coords = {
                c: np.asarray(table[c], dtype=np.int64) if c in table else None
                for c in KINDS["programming"][1]
            }
            m = Measurements(
                **meta,
                levels=L,
                programming=Programming(target, g, "uS", L, nominal, **coords),
            )
        else:
            m = Measurements(**meta, levels=L, reads=_pivot_reads(src, table, target, g, nominal, L))

    return write_validated(out_h5, m, src, force)


def write_validated(out: str | os.PathLike, m: Measurements, src: str | os.PathLike, force: bool = False) -> Path:
    """Write ``m`` atomically, reading it back through the validating reader first.

    A problem the reader finds is reported against ``src -> out`` (the file converted and
    the file being written); nothing is left behind.
    """
    dst = Path(out)

    def write_and_check(tmp: Path) -> None:
        _write(tmp, m)
        try:
            read_measurements(tmp)
        except InputError as exc:
            raise InputError(str(exc).replace(str(tmp), f"{src} -> {dst}")) from None

    return atomic_write(dst, write_and_check, force)


def _pivot_reads(src: Path, table: dict, target: np.ndarray, g: np.ndarray, nominal, L: int) -> Reads:
    dev = np.asarray(table["device_id"], dtype=np.int64)
    ids, counts = np.unique(dev, return_counts=True)
    if np.any(counts != counts[0]):
        bad = int(ids[np.argmax(counts != counts[0])])
        raise InputError(
            f"{src}: device_id {bad} has a different number of reads than device {int(ids[0])}; "
            "expected the same number of reads for every device"
        )
    order = np.argsort(dev, kind="stable")
    r = int(counts[0])
    lvl = target[order].reshape(-1, r)
    if np.any(lvl != lvl[:, :1]):
        raise InputError(f"{src}: target_level: differs between reads of one device; expected one target per device")
    return Reads(ids, lvl[:, 0], g[order].reshape(-1, r), "uS", L, nominal)
