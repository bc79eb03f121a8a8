#!/usr/bin/env python
"""Generate the example measurement files in ``calibration/examples/`` (deterministic).

Each file is drawn from known parameters with a fixed seed by the generators of
``xbar.calibration.synthetic`` (where the parameters are listed), so running this
script again reproduces the files byte for byte with the same numpy and h5py versions
(the generators call no BLAS and round every value to a fixed decimal grid, so thread
counts and CPU-specific vectorised math do not change a bit; the test suite checks
it). The SHA-256 that ``xbar fit`` records in a preset's provenance is therefore
stable:

* ``fefet_per_level.h5``: 4-level FeFET-like device, sigma per level
  [0.1, 0.4, 0.4, 0.1] level units (TRICE Eq. 16, FeFET1 with sigma_d = 0.1), 1,000
  devices per level, plus /reads (40 devices per level x 16 reads, read sigma
  [0.02, 0.03, 0.03, 0.02]).
* ``reram_correlated.h5``: 8 arrays of 32 x 64 devices whose deviations are
  sigma 0.1 Kronecker-exponential correlated noise (lengths 3 rows, 8 columns) plus
  independent sigma 0.05; as /array_maps and as /programming rows.
* ``pcm_drift.h5``: 50 devices per level, 12 log-spaced reads from t0 = 20 s to
  1e6 s; nu mean [0.10, 0.07, 0.05, 0.03], std [0.02, 0.015, 0.01, 0.008].
* ``hfox_switching.h5``: 2,000 LRS (median 8 kOhm, sigma_ln 0.25) and 2,000 HRS
  (median 80 kOhm, sigma_ln 0.55) cycles; Emonds Eq. 1 gives p_bf = Phi(-ln 10 / 0.8)
  = 2.0e-3.

* ``arc2_session.h5`` + ``arc2_plan.csv``: an ArC TWO session as ArC2Control stores it
  (written by its own ``arc2control.h5utils.H5DataStore``; needs ``pip install --no-deps
  arc2control==0.2.0``) and its experiment plan, for ``xbar import-arc2``: a 16 x 8 block
  of a 32 x 32 ReRAM array programmed three times to 4 levels (10, 30, 50, 70 uS) by
  write-verify, per-level sigma [0.10, 0.22, 0.22, 0.12] and read sigma [0.02, 0.03, 0.03,
  0.025] level units, 5 repeated reads after each programming, 4 devices per level on
  retention for 10 minutes (nu mean [0.03, 0.02, 0.015, 0.01]), and the raster of a Read
  All (``xbar.calibration.arc2_synthetic.EXAMPLE_SPEC``, seed 2026). Its values are
  reproducible; its bytes are not (H5DataStore leaves HDF5 object times on).

Usage: ``.venv/bin/python calibration/make_examples.py [--out DIR] [--force]``
(refuses to overwrite existing files unless ``--force``). Fit one with
``xbar fit calibration/examples/fefet_per_level.h5 --out fefet.toml --report rep/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xbar.calibration import arc2_synthetic, synthetic, write_measurements
from xbar.errors import InputError
from xbar.fileio import check_writable

EXAMPLES = {
    "fefet_per_level.h5": (synthetic.fefet_per_level, 1),
    "reram_correlated.h5": (synthetic.reram_correlated, 2),
    "pcm_drift.h5": (synthetic.pcm_drift, 3),
    "hfox_switching.h5": (synthetic.hfox_switching, 4),
}
ARC2_SESSION, ARC2_PLAN = "arc2_session.h5", "arc2_plan.csv"  # an instrument's store, not xbar-measurements


def write_arc2_example(out: Path, force: bool = False) -> list[Path]:
    """``arc2_session.h5`` and ``arc2_plan.csv`` in ``out`` (refused if present without ``force``)."""
    session, plan = out / ARC2_SESSION, out / ARC2_PLAN
    for p in (session, plan):
        check_writable(p, force)
    truth = arc2_synthetic.write_session(session, arc2_synthetic.EXAMPLE_SPEC, seed=arc2_synthetic.EXAMPLE_SEED)
    return [session, arc2_synthetic.write_plan(plan, truth)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "examples"), help="output directory")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        for name, (make, seed) in EXAMPLES.items():
            path = write_measurements(out / name, make(seed), force=args.force)
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        for path in write_arc2_example(out, args.force):
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    except InputError as exc:
        print(f"make_examples: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
