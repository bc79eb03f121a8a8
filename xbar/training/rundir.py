"""The run directory of ``xbar train``: its files and their lifecycle.

A run directory holds ``manifest.json`` (model, data, preset, algorithm, seed,
every hyper-parameter, metrics), ``metrics.jsonl`` (one JSON line per epoch),
``checkpoint.pt`` (plain tensors) and, at the end, ``model.pt`` (the digital state
dict). :class:`RunDir` checks it before anything is written (``force``, a resumable
run with the same settings, or a start abandoned before its first checkpoint), writes
it atomically (``xbar.fileio``) and, on failure, removes what a run without a
checkpoint wrote or marks the manifest ``failed``/``interrupted``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from xbar.errors import InputError
from xbar.fileio import atomic_torch_save, atomic_write_json, atomic_write_text
from xbar.training.checkpoint import load_checkpoint, save_checkpoint

RUN_FORMAT = "xbar-run"
MANIFEST, METRICS, CHECKPOINT, MODEL = "manifest.json", "metrics.jsonl", "checkpoint.pt", "model.pt"
#: Hyper-parameters a resumed run may change (they do not alter the result).
FREE_ON_RESUME = ("progress", "device")


def check_force(out: Path, force: bool) -> None:
    """Refuse an existing non-empty ``out`` unless ``force`` or it is an abandoned start."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if not out.exists() or force or not any(out.iterdir()) or abandoned_start(out):
        return
    raise InputError(f"{out}: run directory already exists; pass --force to overwrite it or --resume to continue it (force=True, resume=True from Python)")


def abandoned_start(out: Path) -> bool:
    """Whether ``out`` holds only what a run killed before its first checkpoint leaves behind:
    our manifest (status running) and maybe metrics, no checkpoint or model, and the
    process that wrote it gone (same host, pid no longer running). Such a directory is
    started over without --force."""
    names = {p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    if MANIFEST not in names or not names <= {MANIFEST, METRICS}:
        return False
    try:
        man = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(man, dict) or man.get("format") != RUN_FORMAT or man.get("status") != "running":
        return False
    pid = man.get("pid")
    if man.get("host") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return False  # cannot tell whether it still runs
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def update_manifest(outdir: Path, **fields: Any) -> None:
    """Rewrite some fields of the run's manifest (atomically); a missing or broken one is left alone."""
    try:
        man = json.loads((outdir / MANIFEST).read_text())
    except (OSError, ValueError):
        return
    if isinstance(man, dict):
        for key, value in fields.items():
            if value is None:
                man.pop(key, None)
            else:
                man[key] = value
        atomic_write_json(outdir / MANIFEST, man, force=True)


def prepare_resume(outdir: Path, source, data_name, label, algo, seed, epochs, h, spec=None) -> dict[str, Any]:
    """The checkpoint of the run in ``outdir``, after checking that it was started with these settings."""
    mpath = outdir / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{mpath}: no manifest; nothing to resume (start without --resume)")
    try:
        man = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{mpath}: unreadable manifest ({exc})") from None
    given = {"model": source.spec, "data": data_name, "preset": label, "algo": algo, "seed": seed, "epochs": epochs}
    changed = source.changed(man.get("model_spec"))
    if changed:
        raise InputError(f"{mpath}: {changed}; resume with the code the run started with (or start a new run)")
    if spec is not None and man.get("preset_spec") is not None and man["preset_spec"] != spec:
        raise InputError(f"{mpath}: preset_spec differs from preset {label!r} as given now; resume with the run's preset")
    for key, value in given.items():
        if man.get(key) != value:
            raise InputError(f"{mpath}: {key} = {man.get(key)!r}, but this run asks for {value!r}; resume with the same settings")
    for key, value in h.items():
        if key in FREE_ON_RESUME:
            continue
        if man.get("hyper", {}).get(key) != value:
            raise InputError(
                f"{mpath}: hyper-parameter {key} = {man.get('hyper', {}).get(key)!r}, but this run asks for {value!r}; "
                "resume with the same settings"
            )
    return load_checkpoint(outdir / CHECKPOINT)


class RunDir:
    """One run directory through its lifecycle: :meth:`start`, then :meth:`finish` or :meth:`fail`.

    ``path=None`` (no directory, or a non-writing rank of a parallel run) makes every
    write a no-op, so the training code calls the same methods either way.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.created = False
        self.manifest: dict[str, Any] = {}

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        if self.path is not None:
            atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in history), force=True)

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        if self.path is not None:
            save_checkpoint(self.path / CHECKPOINT, state)

    def start(self, manifest: dict[str, Any], resumed: bool) -> None:
        """Write the manifest (status running): a fresh one, or the resumed run's marked running again."""
        self.manifest = manifest
        if self.path is None:
            return
        if resumed:
            update_manifest(self.path, status="running", error=None, pid=os.getpid(), host=socket.gethostname())
            return
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, CHECKPOINT, MODEL):
            if (self.path / name).exists():
                (self.path / name).unlink()
        atomic_write_json(self.path / MANIFEST, manifest, force=True)

    def finish(self, metrics: dict[str, Any], model_state: dict[str, Any]) -> None:
        """Write ``model.pt`` and the manifest with status done and the final metrics."""
        if self.path is None:
            return
        atomic_torch_save(self.path / MODEL, model_state, force=True)
        self.manifest.update(status="done", metrics=metrics)
        self.manifest.pop("pid")
        self.manifest.pop("host")
        atomic_write_json(self.path / MANIFEST, self.manifest, force=True)

    def fail(self, exc: BaseException) -> None:
        """A run that stopped on ``exc``: with no checkpoint yet, remove what it wrote (so that a
        retry needs no --force); else keep the checkpoint and mark the manifest failed."""
        outdir = self.path
        if outdir is None:
            return
        if not (outdir / CHECKPOINT).exists():
            for name in (MANIFEST, METRICS):
                (outdir / name).unlink(missing_ok=True)
            if self.created:
                try:
                    outdir.rmdir()
                except OSError:  # something else was put there meanwhile
                    pass
            return
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        update_manifest(outdir, status=status, error=f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
                        pid=None, host=None)


def new_manifest(**fields: Any) -> dict[str, Any]:
    """A fresh manifest (status running, this process's pid and host) holding ``fields``."""
    return {"format": RUN_FORMAT, "version": 1, "status": "running", **fields,
            "metrics": {}, "pid": os.getpid(), "host": socket.gethostname()}
