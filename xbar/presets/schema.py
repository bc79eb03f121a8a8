"""The preset data model: TOML sections <-> validated device objects.

Format: docs/presets.md. Validation reports one line naming the file, the field,
the value and what was expected. Everything here, and the device parts it builds,
loads without torch (``xbar presets list`` starts in a fraction of a second);
:meth:`Preset.device_model` imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xbar.devices.bitflip_config import BitFlipModel
from xbar.devices.config import DeviceConfig
from xbar.devices.correlated import KroneckerCovariance
from xbar.devices.drift import DriftModel, ReadNoise
from xbar.devices.families import NoiseFamily
from xbar.devices.programming import ProgrammingNoise
from xbar.devices.variation import RangeVariation
from xbar.errors import InputError
from xbar.mapping.config import MappingConfig

if TYPE_CHECKING:
    from xbar.devices.measured import MeasuredCovariance
    from xbar.devices.model import DeviceModel

SCHEMA = "xbar-preset"
SCHEMA_VERSION = 1
TOP_LEVEL = ("schema", "schema_version", "name", "description", "source")


# section name -> (class, field renames TOML->class, fields that are TOML-only)
SECTIONS: dict[str, Any] = {
    "mapping": MappingConfig,
    "programming": ProgrammingNoise,
    "correlation": KroneckerCovariance,
    "injection": NoiseFamily,
    "read_noise": ReadNoise,
    "drift": DriftModel,
    "bitflip": BitFlipModel,
    "weight_variation": RangeVariation,
}
RENAMES = {"injection": {"family": "kind"}, "correlation": {"kind": None}, "bitflip": {"targets": None}}
KRONECKER_KIND = "kronecker-exponential"  # [correlation].kind of KroneckerCovariance (the default)
MEASURED_KINDS = ("dense", "low-rank")  # a measured covariance (xbar.presets.covariance)
CORRELATION_KINDS = (KRONECKER_KIND, *MEASURED_KINDS)


# Physical bounds of every numeric field, (section, TOML key) -> (low, high, unit): a value
# outside is a typo or a unit mistake (sigma_d = 1e308 overflows to NaN losses, tile_rows =
# 1e17 asks for an impossible array), refused on load with the bound in the message. A
# low bound given as ``(value,)`` is exclusive. Tuple fields bound each entry.
LEVELS, SIGMAS = "level steps (uS for analog storage)", "sigmas"
BOUNDS: dict[tuple[str, str], tuple[Any, float, str]] = {
    ("mapping", "weight_bits"): (0, 16, "bits"),
    ("mapping", "bits_per_device"): (1, 8, "bits (at most 256 levels per device)"),
    ("mapping", "tile_rows"): (1, 65536, "devices"),
    ("mapping", "tile_cols"): (1, 65536, "devices"),
    ("mapping", "conductance_max_uS"): ((0,), 1e4, "uS"),
    ("programming", "sigma_d"): (0, 100, LEVELS),
    ("programming", "level_multipliers"): (0, 100, "x sigma_d"),
    ("programming", "mean_levels"): (-100, 100, LEVELS),
    ("programming", "sigma_poly_uS"): (-1e4, 1e4, "uS"),
    ("programming", "poly_reference_uS"): ((0,), 1e4, "uS"),
    ("programming", "scale"): (0, 100, "x"),
    ("correlation", "sigma"): (0, 100, LEVELS),
    ("correlation", "length_rows"): (0.1, 1e4, "devices (leave it out for no correlation along rows)"),
    ("correlation", "length_cols"): (0.1, 1e4, "devices (leave it out for no correlation along columns)"),
    ("correlation", "mean"): (-100, 100, LEVELS),
    ("correlation", "rank"): (0, 4096, "eigenpairs (0 = full covariance)"),
    ("injection", "threshold"): (-10, 10, SIGMAS),
    ("read_noise", "sigma_levels"): (0, 100, LEVELS),
    ("read_noise", "coeff"): (0, 10, "(relative)"),
    ("read_noise", "exponent"): (0, 2, ""),
    ("read_noise", "max"): (0, 10, "(relative)"),
    ("read_noise", "t_read_s"): ((0,), 1e3, "s"),
    ("read_noise", "t0_s"): ((0,), 1e9, "s"),
    ("read_noise", "scale"): (0, 100, "x"),
    ("read_noise", "times_s"): ((0,), 1e10, "s"),
    ("read_noise", "sigma_poly_uS"): (-1e4, 1e4, "uS"),
    ("read_noise", "poly_reference_uS"): ((0,), 1e4, "uS"),
    ("drift", "t0_s"): ((0,), 1e9, "s"),
    ("drift", "nu_mean_levels"): (0, 1, "(drift exponent)"),
    ("drift", "nu_std_levels"): (0, 1, "(drift exponent)"),
    ("drift", "nu_mean_log"): (-1, 1, ""),
    ("drift", "nu_mean_clip"): (0, 1, "(drift exponent)"),
    ("drift", "nu_std_log"): (-1, 1, ""),
    ("drift", "nu_std_clip"): (0, 1, "(drift exponent)"),
    ("drift", "scale"): (0, 100, "x"),
    ("drift", "nu_points_uS"): (0, 1e4, "uS"),
    ("weight_variation", "sigma_v"): (0, 1, "(fraction of the layer's weight range A)"),
    ("weight_variation", "gamma"): (0, 10, "(range coefficient)"),
    ("bitflip", "p_0to1"): (0, 1, "(probability)"),
    ("bitflip", "p_1to0"): (0, 1, "(probability)"),
}


def _check_bounds(origin: str, section: str, table: dict[str, Any]) -> None:
    """Refuse a numeric value outside its field's physical bound (``BOUNDS``), naming the bound."""
    for key, value in table.items():
        bound = BOUNDS.get((section, key))
        if bound is None:
            continue
        low, high, unit = bound
        exclusive = isinstance(low, tuple)
        lo = low[0] if exclusive else low
        for v in value if isinstance(value, list) else [value]:
            if not (lo < v if exclusive else lo <= v) or not v <= high:
                raise InputError(
                    f"{origin}: [{section}].{key} = {value!r}: expected {lo:g} {'<' if exclusive else '<='} "
                    f"{key} <= {high:g} {unit}".rstrip()
                )


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_value(origin: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    """Type-check one TOML value against the dataclass field's annotation."""
    ann = str(f.type)
    where = f"{origin}: {key} = {value!r}"
    if isinstance(value, bool) and "bool" not in ann:
        raise InputError(f"{where}: expected {ann}, got a boolean")
    if "tuple" in ann:
        return _check_numbers(where, value, ann)
    if ann.startswith("int") or ann == "int":
        if not isinstance(value, int):
            raise InputError(f"{where}: expected an integer")
        return value
    if ann.startswith("float") or ann == "float":
        if not isinstance(value, int | float):
            raise InputError(f"{where}: expected a number")
        if not math.isfinite(value):
            raise InputError(f"{where}: expected a finite number")
        return float(value)
    if ann.startswith("str") or ann == "str":
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string")
        return value
    return value


def _tuple_length(ann: str) -> int | None:
    """Entries of a ``tuple[float, float]`` annotation; None for ``tuple[float, ...]``."""
    inner = re.search(r"tuple\[([^\]]*)\]", ann)
    if inner is None or "..." in inner.group(1):
        return None
    return len(inner.group(1).split(","))


def _check_numbers(where: str, value: Any, ann: str) -> tuple[float, ...]:
    """A TOML list of finite numbers for a tuple field (exactly n of them for ``tuple[float, float]``)."""
    n = _tuple_length(ann)
    expected = f"a list of {n} numbers" if n is not None else "a list of numbers"
    if not isinstance(value, list):
        raise InputError(f"{where}: expected {expected}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise InputError(f"{where}: expected {expected}")
    if not all(math.isfinite(v) for v in value):
        raise InputError(f"{where}: expected finite numbers")
    if n is not None and len(value) != n:
        raise InputError(f"{where}: expected {expected}, got {len(value)}")
    return tuple(float(v) for v in value)


def _describe(ann: str) -> str:
    """What a required field's annotation asks for, in words."""
    for key, words in (("tuple", "a list of numbers"), ("float", "a number"), ("int", "an integer"), ("str", "a string")):
        if key in ann:
            return words
    return f"a value ({ann})"


def _required(cls) -> list[str]:
    """Fields of a section class that have no default."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _section_message(name: str, cls, msg: str) -> str:
    """``[section].field ...`` for a device-class message that starts with a field name."""
    msg = msg.removeprefix(f"{cls.__name__}.")
    head = re.match(r"\w+", msg)
    if head is not None and head.group(0) in _fields(cls):
        return f"[{name}].{msg}"
    return f"[{name}] {msg}"


def build_section(
    name: str, table: dict[str, Any], origin: str, mapping: MappingConfig | None = None, base_dir: Path | None = None
) -> Any:
    """Validate one TOML table and build its device object.

    A measured ``[correlation]`` (kind dense / low-rank) needs the ``mapping`` (its tile)
    and ``base_dir``, the directory its sidecar file is named relative to.
    """
    if not isinstance(table, dict):
        raise InputError(f"{origin}: [{name}] must be a table")
    if name == "correlation" and table.get("kind") in MEASURED_KINDS:
        from xbar.presets.covariance import build_measured

        return build_measured(table, mapping or MappingConfig(), origin, base_dir)
    cls = SECTIONS[name]
    fields = _fields(cls)
    renames = RENAMES.get(name, {})
    kwargs = {}
    for key, value in table.items():
        target = renames.get(key, key)
        if key in renames and target is None:
            continue  # TOML-only field handled by the caller
        if target not in fields:
            known = sorted(set(k for k in fields if k not in renames.values()) | set(renames))
            raise InputError(f"{origin}: [{name}].{key}: unknown field; expected one of {', '.join(known)}")
        kwargs[target] = _check_value(origin, f"[{name}].{key}", value, fields[target])
    if name == "correlation":
        kind = table.get("kind", KRONECKER_KIND)
        if kind not in CORRELATION_KINDS:
            raise InputError(f"{origin}: [correlation].kind = {kind!r}: expected one of {', '.join(CORRELATION_KINDS)}")
    if name == "bitflip":
        targets = table.get("targets", ["weights"])
        bad = [t for t in targets if t not in ("weights", "biases", "activations")] if isinstance(targets, list) else [targets]
        if bad:
            raise InputError(f"{origin}: [bitflip].targets = {targets!r}: expected a list of weights, biases, activations")
    inverse = {v: k for k, v in renames.items() if v}
    for req in _required(cls):
        if req not in kwargs:
            raise InputError(
                f"{origin}: [{name}].{inverse.get(req, req)}: missing; expected {_describe(str(fields[req].type))}"
            )
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{origin}: {_section_message(name, cls, str(exc))}") from None
    _check_bounds(origin, name, table)
    return obj


def section_to_table(
    name: str, obj: Any, relative_to: Path | None = None, explicit: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The TOML table of a device object, omitting fields left at their defaults unless named in ``explicit``.

    ``explicit`` holds TOML keys the document gave (a preset keeps what its file spelled
    out, e.g. a fitted ``t0_s = 20.0``). A measured covariance (a ``[correlation]`` that
    is not a Kronecker kernel) names its sidecar relative to ``relative_to`` when it lies
    below it.
    """
    if name == "correlation" and not isinstance(obj, KroneckerCovariance):
        from xbar.presets.covariance import to_table

        return to_table(obj, relative_to, explicit)
    out: dict[str, Any] = {}
    inverse = {v: k for k, v in RENAMES.get(name, {}).items() if v}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        key = inverse.get(f.name, f.name)
        if value is None or (value == default and name != "mapping" and key not in explicit):
            continue
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[key] = value
    if name == "correlation":
        out = {"kind": KRONECKER_KIND, **out}
    return out


@dataclass(frozen=True)
class Preset:
    """A named, validated device description (see docs/presets.md)."""

    name: str
    mapping: MappingConfig
    description: str = ""
    source: str = ""
    programming: ProgrammingNoise | None = None
    correlation: KroneckerCovariance | MeasuredCovariance | None = None
    injection: NoiseFamily | None = None
    read_noise: ReadNoise | None = None
    drift: DriftModel | None = None
    bitflip: BitFlipModel | None = None
    bitflip_targets: tuple[str, ...] = ("weights",)
    provenance: dict[str, Any] = field(default_factory=dict)
    weight_variation: RangeVariation | None = None
    # "section.key" of every field the document spelled out, written back by to_dict even
    # when it equals the default; not part of equality (it is spelling, not the device)
    explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<preset>", base_dir: str | Path | None = None) -> Preset:
        """Validate a parsed TOML document; raises InputError with one line.

        ``base_dir``: the directory a ``[correlation].file`` is relative to (the preset file's).
        """
        if not isinstance(data, dict):
            raise InputError(f"{origin}: expected a TOML table at the top level")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise InputError(f"{origin}: schema = {data.get('schema')!r}: expected {SCHEMA!r}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise InputError(f"{origin}: schema_version = {version!r}: expected {SCHEMA_VERSION}")
        for key in data:
            if key not in TOP_LEVEL and key not in SECTIONS and key != "provenance":
                raise InputError(
                    f"{origin}: {key}: unknown key; expected one of "
                    f"{', '.join(list(TOP_LEVEL) + [f'[{s}]' for s in SECTIONS] + ['[provenance]'])}"
                )
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{origin}: name: expected a non-empty string")
        for key in ("description", "source"):
            if key in data and not isinstance(data[key], str):
                raise InputError(f"{origin}: {key}: expected a string")
        if "mapping" not in data:
            raise InputError(f"{origin}: [mapping]: missing; every preset needs a [mapping] section")
        parts: dict[str, Any] = {}
        base = Path(base_dir) if base_dir is not None else None
        for s in SECTIONS:
            if s in data:
                parts[s] = build_section(s, data[s], origin, parts.get("mapping"), base)
        prov = data.get("provenance", {})
        if not isinstance(prov, dict):
            raise InputError(f"{origin}: [provenance] must be a table")
        targets = tuple(data.get("bitflip", {}).get("targets", ["weights"]))
        preset = cls(
            name=name,
            description=data.get("description", ""),
            source=data.get("source", ""),
            provenance=prov,
            bitflip_targets=targets,
            explicit=frozenset(f"{s}.{key}" for s in parts for key in data[s]),
            **parts,
        )
        for s, obj in parts.items():
            check = getattr(obj, "check", None)
            if s != "mapping" and check is not None:
                try:
                    check(parts["mapping"])
                except ValueError as exc:
                    raise InputError(f"{origin}: {_section_message(s, type(obj), str(exc))}") from None
        try:
            preset.device_config()
        except ValueError as exc:
            raise InputError(f"{origin}: {exc}") from None
        return preset

    def to_dict(self, relative_to: str | Path | None = None, canonical: bool = False) -> dict[str, Any]:
        """The TOML document; a sidecar file is named relative to ``relative_to`` if below it (else absolute).

        Fields the source document gave are written even at their defaults (``explicit``);
        ``canonical=True`` leaves every default out, the one form of equal presets
        (for comparing and storing presets as values, e.g. a run's ``preset_spec``).
        """
        out: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": self.name}
        if self.description:
            out["description"] = self.description
        if self.source:
            out["source"] = self.source
        explicit = frozenset() if canonical else self.explicit
        for s in SECTIONS:
            obj = getattr(self, s)
            if obj is not None:
                given = frozenset(k.split(".", 1)[1] for k in explicit if k.startswith(f"{s}."))
                out[s] = section_to_table(s, obj, None if relative_to is None else Path(relative_to), given)
        if self.bitflip is not None:
            out["bitflip"]["targets"] = list(self.bitflip_targets)
        if self.provenance:
            out["provenance"] = copy.deepcopy(self.provenance)
        return out

    @property
    def stores_bit_patterns(self) -> bool:
        """Whether weights are stored as number-format bit patterns on binary cells (bit flips on weights)."""
        return self.device_config().stores_bit_patterns

    @property
    def devices_per_weight(self) -> int:
        """Devices per weight: planes x slices, or one binary cell per stored bit (``DeviceConfig.devices_per_weight``)."""
        return self.device_config().devices_per_weight

    def device_config(self) -> DeviceConfig:
        """The parts of :meth:`device_model`, checked against each other, without torch; built
        once per preset (validation builds it)."""
        return self._once("_device_config", DeviceConfig)

    def device_model(self) -> DeviceModel:
        """The :class:`~xbar.devices.DeviceModel` this preset describes (imports torch), built once per preset."""
        from xbar.devices.model import DeviceModel

        return self._once("_device_model", DeviceModel)

    def _once(self, key: str, cls: type) -> Any:
        """``cls`` built from this preset's device parts, kept under ``key`` (the preset is frozen)."""
        cached = self.__dict__.get(key)
        if cached is None:
            cached = cls(
                mapping=self.mapping,
                programming=self.programming,
                correlation=self.correlation,
                injection=self.injection or NoiseFamily(),
                read_noise=self.read_noise,
                drift=self.drift,
                bitflip=self.bitflip,
                bitflip_targets=self.bitflip_targets,
                variation=self.weight_variation,
            )
            object.__setattr__(self, key, cached)
        return cached

    def to_aihwkit(self, rpu_config_class: Any = None) -> Any:
        """A plain aihwkit ``InferenceRPUConfig`` with aihwkit's own noise model (see ``xbar.presets.aihwkit``)."""
        from xbar.presets.aihwkit import to_aihwkit

        return to_aihwkit(self, rpu_config_class)

    def with_overrides(self, origin: str = "<overrides>", **overrides: Any) -> Preset:
        """A copy with fields replaced by keyword.

        Keys are a field name that is unique across sections (``sigma_d``,
        ``weight_bits``, ``bits_per_device``, ``p_0to1``...) or ``section.field`` /
        ``section__field`` (``correlation.sigma``). ``name``/``description`` work too.
        """
        data = self.to_dict()
        for key, value in overrides.items():
            key = key.replace("__", ".")
            if key in TOP_LEVEL:
                data[key] = value
                continue
            if "." in key:
                section, fname = key.split(".", 1)
            else:
                hits = [s for s in SECTIONS if fname_in(s, key)]
                if not hits:
                    raise InputError(f"{origin}: {key}: no preset section has this field")
                if len(hits) > 1:
                    raise InputError(
                        f"{origin}: {key}: ambiguous; name it as one of {', '.join(f'{h}.{key}' for h in hits)}"
                    )
                section, fname = hits[0], key
            if section not in SECTIONS:
                raise InputError(f"{origin}: {key}: unknown section {section!r}")
            table = data.setdefault(section, {})
            if value is None:
                table.pop(fname, None)
            else:
                table[fname] = list(value) if isinstance(value, tuple) else value
        return Preset.from_dict(data, origin=f"{self.name} with overrides")


def fname_in(section: str, key: str) -> bool:
    cls = SECTIONS[section]
    inverse = {v: k for k, v in RENAMES.get(section, {}).items() if v}
    names = {inverse.get(f.name, f.name) for f in dataclasses.fields(cls)}
    return key in names
