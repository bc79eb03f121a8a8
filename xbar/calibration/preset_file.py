"""Write a fitted preset: the TOML file plus, for a measured covariance, its sidecar.

A dense or low-rank ``[correlation]`` chosen by :func:`xbar.calibration.fit` carries
arrays too large for TOML; they go to ``<preset stem>.covariance.h5`` next to the
preset (datasets ``covariance``, or ``eigenvalues`` and ``eigenvectors``), which the
preset names with its SHA-256 (docs/presets.md). Both files are written atomically
and only with ``force`` over existing ones; if the preset cannot be written, the
sidecar written for it is removed.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from xbar.calibration.result import FitResult
from xbar.devices.measured import MeasuredCovariance
from xbar.fileio import check_writable
from xbar.presets.schema import Preset


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the covariance of the preset ``out`` goes: ``NAME.covariance.h5`` beside it."""
    p = Path(out)
    return p.with_name(f"{p.stem}.covariance.h5")


def needs_sidecar(preset: Preset) -> bool:
    """Whether ``preset`` holds a measured covariance whose numbers are in no file yet (they go to a sidecar)."""
    cov = preset.correlation
    return isinstance(cov, MeasuredCovariance) and not cov.source.get("path")


def write_preset(result: FitResult, out: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the fitted preset to ``out`` (and its covariance sidecar); returns the paths written."""
    from xbar.presets.covariance import write_sidecar
    from xbar.presets.store import save

    out = Path(out)
    check_writable(out, force, create=False)
    preset = result.preset
    written: list[Path] = []
    if needs_sidecar(preset):
        side = sidecar_path(out)
        check_writable(side, force, create=False)
        digest = write_sidecar(preset.correlation, side, force=force)
        written.append(side)
        source = {"file": side.name, "sha256": digest, "path": str(side.resolve())}
        preset = replace(preset, correlation=replace(preset.correlation, source=source))
    try:
        save(preset, out, force=force)  # checks that the text loads back
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return [out, *written]


__all__ = ["needs_sidecar", "sidecar_path", "write_preset"]
