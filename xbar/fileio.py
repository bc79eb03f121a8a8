"""Atomic, non-clobbering writes for results, presets and checkpoints."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xbar.errors import InputError, first_line

#: OSError numbers of a device that takes no more writes: full, over quota, read-only.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _check_parent(p: Path) -> None:
    """InputError unless files can be created in ``p``'s nearest existing parent directory.

    Tried with a real (removed) file: ``os.access`` says yes to root everywhere, also
    where nothing can be made (/proc, a read-only mount).
    """
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{p}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xbar-probe.", dir=parent)
    except OSError as exc:
        raise InputError(f"{p}: directory {parent} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_writable(path: str | os.PathLike, force: bool = False, create: bool = True) -> Path:
    """Check that ``path`` can be written: one-line ``InputError`` otherwise.

    Refuses a directory, an existing file without ``force``, a parent that is not a
    directory and a nearest existing parent in which no file can be made. With
    ``create`` the missing parent directories are made; without it nothing is
    created (a check before any work).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; expected a file name")
    if p.exists() and not force:
        raise InputError(f"{p}: already exists; pass --force to overwrite it (force=True from Python)")
    _check_parent(p)
    if create:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{p}: cannot create directory {p.parent} ({exc.strerror or exc})") from None
    return p


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check, before any work, that directory ``path`` exists as a directory or can be made there."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: is a file; expected a directory")
    _check_parent(p / "x" if p.is_dir() else p)
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], force: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` (readers never see a partial file).

    A device that takes no more writes (full, over quota, read-only: ``NO_SPACE``) is an
    ``InputError`` naming ``path``; the temporary file is removed on any failure.
    """
    p = check_writable(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise _write_error(p, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, p)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        error = _write_error(p, exc)
        if error is exc:
            raise
        raise error from None
    return p


def _write_error(p: Path, exc: BaseException) -> BaseException:
    """One-line InputError for a write that failed because the device takes no more; else ``exc``."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return InputError(f"{p}: cannot be written: {exc.strerror or os.strerror(exc.errno)}")
    if isinstance(exc, RuntimeError) and "file write failed" in str(exc):  # torch.save's stream writer
        try:
            full = os.statvfs(p.parent).f_bavail == 0
        except OSError:
            full = False
        return InputError(f"{p}: cannot be written: {'No space left on device' if full else first_line(exc)}")
    return exc


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that an :func:`atomic_write` of ``path`` killed mid-write left behind.

    Only for a file that no other process writes at the same time (a run's checkpoint).
    """
    p = Path(path)
    stale = [t for t in p.parent.glob(f".{p.name}.*.tmp") if t.is_file()]
    for t in stale:
        t.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    return atomic_write(path, lambda t: t.write_text(text), force)


def atomic_write_json(path: str | os.PathLike, data: Any, force: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", force)


def atomic_torch_save(path: str | os.PathLike, obj: Any, force: bool = False) -> Path:
    """``torch.save`` atomically, through a file handle: the archive's inner folder is then torch's
    fixed ``archive``, not the random temporary name, so the same tensors give the same bytes."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    return atomic_write(path, write, force)


def torch_load_safe(path: str | os.PathLike, map_location: Any = "cpu", missing: str = "no such checkpoint file") -> Any:
    """``torch.load(path, weights_only=True)``: a file that is absent, holds code or is not a
    PyTorch file at all gives one ``InputError`` line (``missing`` names what was sought)."""
    import pickle
    import re
    import zipfile

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {missing}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip, legacy-format and decoding errors alike: bad input
        code = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and code:
            raise InputError(
                f"{p}: holds code objects ({code.group(1)}), not only tensors; refusing to unpickle code "
                "(weights_only=True)"
            ) from None
        if not zipfile.is_zipfile(p):
            raise InputError(f"{p}: not a PyTorch file; expected one written by torch.save") from None
        detail = re.search(r"WeightsUnpickler error: ([^\n]{1,120})", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and detail:  # not PyTorch's paragraph, its one relevant line
            raise InputError(f"{p}: holds objects other than tensors ({detail.group(1).strip()}); refusing to "
                             "unpickle code (weights_only=True)") from None
        first = first_line(exc)
        raise InputError(f"{p}: not a readable PyTorch checkpoint ({first})") from None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (provenance of presets, sources, data and checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
