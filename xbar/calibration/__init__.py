"""Device fitting: HDF5 measurements (``calibration/SCHEMA.md``) -> device presets.

Workflow: :func:`read_measurements` validates an ``xbar-measurements`` file,
:func:`fit` runs every fitter that has data and returns a :class:`FitResult` whose
``preset`` is the validated :class:`xbar.presets.Preset` (``preset_dict``: its
docs/presets.md document), ``preset_file.write_preset`` writes it (with a covariance
sidecar when needed), and :func:`write_report` draws the diagnostic plots.
:func:`import_csv` converts a plain CSV table and :func:`import_arc2` an ArC TWO
session (ArC2Control data store) into a schema-valid file. The fitters
(scikit-learn-like: hyperparameters in the constructor, ``fit(data) -> result``, no
hidden state) are importable on their own.
"""

from xbar.calibration.arc2 import import_arc2
from xbar.calibration.csv_import import import_csv
from xbar.calibration.drift import DriftFit, DriftFitter
from xbar.calibration.fit import fit
from xbar.calibration.intervals import Interval
from xbar.calibration.programming import LevelNoiseFitter, ProgrammingFit
from xbar.calibration.read_noise import ReadNoiseFit, ReadNoiseFitter
from xbar.calibration.reader import read_measurements
from xbar.calibration.report import write_report
from xbar.calibration.result import FitResult
from xbar.calibration.schema import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    ArrayMaps,
    Drift,
    Measurements,
    Programming,
    Reads,
    Switching,
)
from xbar.calibration.selection import SelectionResult, SigmaModelSelector
from xbar.calibration.spatial import SpatialFit, SpatialFitter
from xbar.calibration.switching import BitFlipFitter, SwitchingFit, bitflip_threshold
from xbar.calibration.writer import write_measurements

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "ArrayMaps",
    "BitFlipFitter",
    "Drift",
    "DriftFit",
    "DriftFitter",
    "FitResult",
    "Interval",
    "LevelNoiseFitter",
    "Measurements",
    "Programming",
    "ProgrammingFit",
    "ReadNoiseFit",
    "ReadNoiseFitter",
    "Reads",
    "SelectionResult",
    "SigmaModelSelector",
    "SpatialFit",
    "SpatialFitter",
    "Switching",
    "SwitchingFit",
    "bitflip_threshold",
    "fit",
    "import_arc2",
    "import_csv",
    "read_measurements",
    "write_measurements",
    "write_report",
]
