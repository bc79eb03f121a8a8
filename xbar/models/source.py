"""Where a network comes from: one parser and builder for every way a model can be named.

A *model spec* is one of

- a zoo name (``lenet``, ``resnet18``, ... see :func:`xbar.models.names`);
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None,
  num_classes=K)`` with its first convolution re-made for the data's input channels;
- ``FILE.py:FACTORY``: the function (or ``nn.Module`` class) ``FACTORY`` defined in
  the Python file ``FILE.py``;
- ``package.module:FACTORY``: the same from an importable module;
- from Python, an ``nn.Module`` instance (a fresh copy is taken for every build).

A factory is called with those of ``num_classes``, ``in_channels`` and ``image_size``
that it names as parameters (a factory taking ``**kwargs`` gets ``num_classes``).
Every build is checked with one forward pass of zeros: the output must be
``[batch, num_classes]``. Any failure of the user's code (import, call, forward) is an
:class:`~xbar.errors.InputError` of one line naming the spec.

Only code the user named is imported; weights always come from tensors-only files.
A run directory records :meth:`ModelSource.to_dict` (the spec and the SHA-256 of its
source file), and :meth:`ModelSource.from_record` rebuilds it, saying when the source
file changed since (:meth:`ModelSource.changed`).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbar.errors import InputError, first_line
from xbar.fileio import sha256_of
from xbar.models import registry

KINDS = ("zoo", "torchvision", "file", "module", "instance")
SIZE_KEYS = ("in_channels", "num_classes", "image_size")
SPEC_HELP = (
    "a zoo name, torchvision:NAME, FILE.py:FACTORY or package.module:FACTORY"
)


@dataclass(frozen=True)
class ModelSource:
    """A parsed model spec; :meth:`build` makes a fresh network of it.

    ``spec`` is the canonical text (a file path made absolute), ``kind`` one of
    :data:`KINDS`, ``target`` the zoo/torchvision name, file path or module name,
    ``factory`` the callable's name, ``sha256`` the hash of the source file when the
    spec was parsed (file and module kinds), ``options`` extra keywords for the builder.
    """

    spec: str
    kind: str
    target: str
    factory: str | None = None
    sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    instance: nn.Module | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ building
    @property
    def zoo_name(self) -> str | None:
        """The zoo name (keys the papers' per-network defaults), None for other kinds."""
        return self.target if self.kind == "zoo" else None

    def build(
        self,
        in_channels: int | None = None,
        num_classes: int | None = None,
        image_size: int | None = None,
        check: bool = True,
    ) -> nn.Module:
        """A freshly initialised network for inputs ``in_channels x image_size x image_size``
        and ``num_classes`` outputs (unset sizes: the builder's own defaults).

        With ``check`` and all three sizes known, one forward pass of zeros checks the
        output shape; a mismatch or any error of the user's code is one ``InputError`` line.
        """
        sizes = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        if self.kind == "zoo":
            model = registry.build(self.target, **sizes, **self.options)
        elif self.kind == "instance":
            model = copy.deepcopy(self.instance)
        elif self.kind == "torchvision":
            model = _torchvision(self.spec, self.target, in_channels, num_classes, self.options)
        else:
            model = self._call_factory(sizes)
        if not isinstance(model, nn.Module):
            raise InputError(f"model {self.spec!r}: the factory returned {type(model).__name__}; expected a torch nn.Module")
        if check and self.kind != "zoo" and None not in sizes.values():
            check_shape(model, self.spec, in_channels, num_classes, image_size)
        return model

    def _call_factory(self, sizes: dict[str, int | None]) -> Any:
        fn = self._load_factory()
        kwargs = {**_accepted(fn, {k: v for k, v in sizes.items() if v is not None}), **self.options}
        try:
            with _user_path(self):
                return fn(**kwargs)
        except InputError:
            raise
        except Exception as exc:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise InputError(f"model {self.spec!r}: {self.factory}({args}) raised {type(exc).__name__}: "
                             f"{first_line(exc)}") from None

    def _load_factory(self):
        module = _import_file(self) if self.kind == "file" else _import_module(self)
        fn = getattr(module, self.factory, None)
        if fn is None:
            defined = sorted(k for k, v in vars(module).items()
                             if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__)
            known = f"; it defines {', '.join(defined)}" if defined else ""
            raise InputError(f"model {self.spec!r}: {self.target} has no {self.factory!r}{known}")
        if not callable(fn):
            raise InputError(f"model {self.spec!r}: {self.factory} is a {type(fn).__name__}; expected a function or nn.Module class")
        return fn

    # ----------------------------------------------------------------- recording
    def current_sha256(self) -> str | None:
        """SHA-256 of the source file as it is now (file and module kinds), else None."""
        path = self.source_path()
        return sha256_of(path) if path and Path(path).is_file() else None

    def source_path(self) -> str | None:
        """The file holding the factory (file kind; module kind: the module's file if found)."""
        if self.kind == "file" or (self.kind == "instance" and self.target.endswith(".py")):
            return self.target
        if self.kind in ("module", "instance") and self.target:
            try:
                with _user_path(self):
                    found = importlib.util.find_spec(self.target)
            except (ImportError, ValueError):
                return None
            return found.origin if found is not None and found.origin not in (None, "built-in", "frozen") else None
        return None

    def to_dict(self) -> dict[str, Any]:
        """What a manifest records: kind, spec, target, factory, source file and its SHA-256, options."""
        out: dict[str, Any] = {"spec": self.spec, "kind": self.kind, "target": self.target}
        if self.factory is not None:
            out["factory"] = self.factory
        path = self.source_path()
        if path is not None:
            out["source"] = str(path)
            out["sha256"] = self.sha256 or self.current_sha256()
        if self.options:
            out["options"] = dict(self.options)
        return out

    def changed(self, recorded: dict[str, Any] | None) -> str | None:
        """A one-line note if the source file's SHA-256 differs from ``recorded["sha256"]``, else None."""
        want = (recorded or {}).get("sha256")
        if not want:
            return None
        now = self.current_sha256()
        if now == want:
            return None
        where = self.source_path() or self.target
        state = "is missing" if now is None else f"has changed (SHA-256 {now[:12]}, recorded {want[:12]})"
        return f"model {self.spec!r}: source file {where} {state} since the run was recorded"

    @classmethod
    def from_record(cls, model: str, record: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> ModelSource:
        """Parse a manifest's ``model`` string (with its ``model_spec`` record, when present)."""
        opts = dict((record or {}).get("options") or options or {})
        opts = {k: v for k, v in opts.items() if k not in SIZE_KEYS}
        return parse(model, **opts)


# ----------------------------------------------------------------------------- parsing
def build(
    spec: str | os.PathLike | nn.Module | ModelSource,
    in_channels: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    **options: Any,
) -> nn.Module:
    """A fresh network of any model spec (``parse(spec, **options).build(...)``)."""
    return parse(spec, **options).build(in_channels, num_classes, image_size)


def parse(spec: str | os.PathLike | nn.Module | ModelSource, **options: Any) -> ModelSource:
    """The :class:`ModelSource` of ``spec`` (see the module docstring); InputError if malformed.

    A file spec is checked to exist and its SHA-256 taken; module and factory are
    imported only when built.
    """
    if isinstance(spec, ModelSource):
        return spec if not options else ModelSource(**{**spec.__dict__, "options": {**spec.options, **options}})
    if isinstance(spec, nn.Module):
        return _from_instance(spec, options)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"model {spec!r}: expected {SPEC_HELP}, or an nn.Module")
    text = spec.strip()
    if ":" not in text:
        registry.spec(text)  # InputError listing the zoo if unknown
        return ModelSource(text, "zoo", text, options=dict(options))
    head, name = text.rsplit(":", 1)
    if head == "torchvision":
        return ModelSource(text, "torchvision", name, options=dict(options))
    if not name.isidentifier():
        raise InputError(f"model {text!r}: {name!r} is not a Python name; expected {SPEC_HELP}")
    if head.endswith(".py") or os.sep in head or "/" in head:
        path = Path(head).expanduser()
        if not path.is_file():
            raise InputError(f"model {text!r}: {head}: no such Python file")
        path = path.resolve()
        return ModelSource(f"{path}:{name}", "file", str(path), name, sha256_of(path), dict(options))
    if not all(part.isidentifier() for part in head.split(".")):
        raise InputError(f"model {text!r}: {head!r} is neither a .py file nor a module name; expected {SPEC_HELP}")
    return ModelSource(text, "module", head, name, None, dict(options))


def _from_instance(model: nn.Module, options: dict[str, Any]) -> ModelSource:
    """An instance: every build is a deep copy of it; recorded as its class, ``FILE.py:Class`` for a
    class defined in a script or user file, else ``module:Class``, which is how it is rebuilt."""
    cls = type(model)
    if options:
        raise InputError(f"model {cls.__name__} instance: options {sorted(options)} apply to specs, not instances")
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__xbar_user_file__", None)
    if file is None and cls.__module__ == "__main__":
        file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        return ModelSource(f"{path}:{cls.__qualname__}", "instance", str(path), cls.__qualname__,
                           sha256_of(path), {}, model)
    return ModelSource(f"{cls.__module__}:{cls.__qualname__}", "instance", cls.__module__, cls.__qualname__,
                       None, {}, model)


# ---------------------------------------------------------------------------- helpers
def check_shape(model: nn.Module, spec: str, in_channels: int, num_classes: int, image_size: int) -> None:
    """One forward pass of zeros ``[2, C, S, S]`` in eval mode; InputError unless the output is ``[2, K]``."""
    states = [m.training for m in model.modules()]
    first = next(iter(model.parameters()), None)
    x = torch.zeros(2, in_channels, image_size, image_size, device=first.device if first is not None else "cpu")
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"model {spec!r}: cannot run on {in_channels}x{image_size}x{image_size} images "
                         f"({type(exc).__name__}: {first_line(exc)}); expected a network for this data") from None
    finally:
        for m, t in zip(model.modules(), states):
            m.training = t
    if not isinstance(out, torch.Tensor):
        raise InputError(f"model {spec!r}: returns {type(out).__name__}; expected a tensor of logits [batch, classes]")
    if tuple(out.shape) != (2, num_classes):
        raise InputError(f"model {spec!r}: gives outputs of shape {list(out.shape[1:])} per image; the data has "
                         f"{num_classes} classes (expected [{num_classes}])")


def _accepted(fn, sizes: dict[str, int]) -> dict[str, int]:
    """The entries of ``sizes`` that ``fn`` names; a ``**kwargs`` factory also gets ``num_classes``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {k: v for k, v in sizes.items() if k == "num_classes"}
    named = {k: v for k, v in sizes.items() if k in params
             and params[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and "num_classes" in sizes:
        named.setdefault("num_classes", sizes["num_classes"])
    return named


@contextmanager
def _user_path(source: ModelSource):
    """The user's file's folder (file kind) or the working directory (module kind) first on sys.path."""
    folder = str(Path(source.target).parent) if source.kind == "file" else os.getcwd()
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


_FILE_MODULES: dict[tuple[str, str], Any] = {}


def _import_file(source: ModelSource):
    """Execute ``FILE.py`` once per content (keyed by path and SHA-256) as module ``xbar_user_<stem>_<hash>``."""
    path = Path(source.target)
    if not path.is_file():
        raise InputError(f"model {source.spec!r}: {path}: no such Python file")
    digest = sha256_of(path)
    key = (str(path), digest)
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    name = f"xbar_user_{stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"model {source.spec!r}: {path}: cannot be imported as Python source")
    module = importlib.util.module_from_spec(spec)
    module.__xbar_user_file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        with _user_path(source):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        line = f" at line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise InputError(f"model {source.spec!r}: importing {path} raised {type(exc).__name__}{line}: {first_line(exc)}") from None
    _FILE_MODULES[key] = module
    return module


def _import_module(source: ModelSource):
    try:
        with _user_path(source):
            return importlib.import_module(source.target)
    except Exception as exc:
        raise InputError(f"model {source.spec!r}: importing module {source.target} raised {type(exc).__name__}: "
                         f"{first_line(exc)}") from None


def _torchvision(spec: str, name: str, in_channels: int | None, num_classes: int | None, options: dict) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``, first conv fitted to ``in_channels``."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise InputError(f"model {spec!r}: {name!r} is not a torchvision classification model; expected one of "
                         f"{', '.join(known[:12])}, ... (torchvision.models.list_models())")
    kwargs = dict(options)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as exc:
        raise InputError(f"model {spec!r}: torchvision could not build it ({type(exc).__name__}: {first_line(exc)})") from None
    if in_channels is not None:
        refit_first_conv(model, in_channels)
    return model


def refit_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first ``nn.Conv2d`` by one with ``in_channels`` inputs (same shape otherwise, fresh weights)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, 1 if module.groups == module.in_channels and module.groups > 1 else module.groups,
                            module.bias is not None, module.padding_mode)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return
