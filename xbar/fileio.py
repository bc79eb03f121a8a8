"""Atomic, non-clobbering writes for results, presets and checkpoints."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xbar.errors import InputError, first_line


def check_writable(path: str | os.PathLike, force: bool = False, create: bool = True) -> Path:
    """Check that ``path`` can be written: one-line ``InputError`` otherwise.

    Refuses a directory, an existing file without ``force``, a parent that is not a
    directory and a nearest existing parent that is not writable. With ``create`` the
    missing parent directories are made; without it nothing is created (a check
    before any work).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; expected a file name")
    if p.exists() and not force:
        raise InputError(f"{p}: already exists; pass --force to overwrite it (force=True from Python)")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{p}: directory {parent} is not writable")
    if create:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{p}: cannot create directory {p.parent} ({exc.strerror or exc})") from None
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], force: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` (readers never see a partial file)."""
    p = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    return atomic_write(path, lambda t: t.write_text(text), force)


def atomic_write_json(path: str | os.PathLike, data: Any, force: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", force)


def atomic_torch_save(path: str | os.PathLike, obj: Any, force: bool = False) -> Path:
    import torch

    return atomic_write(path, lambda t: torch.save(obj, t), force)


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
        code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and code:
            raise InputError(f"{p}: not a plain tensor checkpoint; refusing to unpickle code (it holds {code.group(1)})") from None
        if not zipfile.is_zipfile(p):
            raise InputError(f"{p}: not a PyTorch file; expected one written by torch.save") from None
        first = first_line(exc)
        raise InputError(f"{p}: not a readable PyTorch checkpoint ({first})") from None
