"""Round trips between xbar presets and aihwkit's inference noise models.

``from_aihwkit(obj)`` reads aihwkit's ``PCMLikeNoiseModel``,
``CustomDriftPCMLikeNoiseModel``, ``StateIndependentNoiseModel`` and
``ReRamWan2022NoiseModel`` (or an inference RPU config carrying one) into a
:class:`Preset` whose device model draws the same statistics:

- programming noise sigma(g) = s_p sum_i c_i (g/g_max)^i g_max / g_ref (uS) -> ``[programming]
  sigma_poly_uS`` (StateIndependent has no g_ref: g_ref = g_max);
- drift nu = s_d |N(mu(g), sd(g))| with (G(t) = G_p ((t + t0)/t0)^-nu): PCM's
  clip(a log(g/g_max) + b) fit (Nandakumar et al. 2019) -> ``nu_mean_log``/``nu_std_log``;
  CustomDrift's interpolated table -> ``nu_points_uS``; StateIndependent's constants ->
  a log fit with a = 0 pinned by its clip;
- read (1/f) noise sigma = s_r q(g_p) sqrt(log((t + t0 + t_r)/(2 t_r))) |G(t)| with
  PCM's q = min(0.0088 / max((g_p/g_max)^0.65, 1e-3), 0.2) and StateIndependent's
  q = 1/g_max -> ``[read_noise] kind = "pcm-1f"`` (coeff, exponent, max);
- ReRAM (Wan et al. 2022): programming with the polynomial of the first time, a
  read at time t a fresh draw around the target with that time's polynomial ->
  ``[read_noise] kind = "resampled-poly"``.

``to_aihwkit(preset)`` goes back to a plain aihwkit ``InferenceRPUConfig`` with
aihwkit's own noise model, or raises one :class:`InputError` naming every part of the
preset aihwkit cannot express (bit slicing, per-channel scales, correlation, bit
flips, ...). aihwkit is imported only when these functions run.

aihwkit 1.1.0 drops an explicit ``prog_coeff_g_max_reference`` (PCM) /
``coeff_g_max_reference`` (ReRAM) argument when coefficients are given; the configs
built here set that attribute after construction, and ``from_aihwkit`` reads the
attribute aihwkit actually uses (the ReRAM default's 40 uS reference is never applied
by aihwkit, so neither is it here).
"""

from __future__ import annotations

import math
from typing import Any

from xbar.errors import InputError
from xbar.presets.schema import Preset

#: aihwkit's fixed PCM constants (``PCMLikeNoiseModel``, aihwkit 1.1.0).
PCM_READ = {"coeff": 0.0088, "exponent": 0.65, "max": 0.2}
PCM_DRIFT = {
    "nu_mean_log": [-0.0155, 0.0244],
    "nu_mean_clip": [0.049, 0.1],
    "nu_std_log": [-0.0125, -0.0059],
    "nu_std_clip": [0.008, 0.045],
}
MODELS = ("PCMLikeNoiseModel", "CustomDriftPCMLikeNoiseModel", "StateIndependentNoiseModel", "ReRamWan2022NoiseModel")
_TILE = 512  # crossbar size recorded in presets read from aihwkit (aihwkit's default max_input_size)


# ------------------------------------------------------------------ aihwkit -> xbar
def from_aihwkit(obj: Any, name: str | None = None, description: str | None = None) -> Preset:
    """The preset of an aihwkit noise model or of an inference RPU config carrying one.

    ``obj``: one of the noise models in :data:`MODELS`, or an ``InferenceRPUConfig`` /
    ``TorchInferenceRPUConfig`` (its ``noise_model`` and ``drift_compensation`` are read;
    forward periphery, clipping and training modifiers are not device properties and are
    not part of a preset). An ``XbarRPUConfig`` gives back its own preset. Anything else
    raises :class:`InputError` in one line saying what was expected.
    """
    if isinstance(getattr(obj, "preset", None), dict) and hasattr(obj, "preset_object"):
        preset = obj.preset_object()
        if preset is None:
            raise InputError(f"{type(obj).__name__}: holds no preset (ideal devices)")
        return preset
    compensation = "global"
    if hasattr(obj, "noise_model") and hasattr(obj, "drift_compensation"):
        compensation = _compensation(obj.drift_compensation)
        obj = obj.noise_model
    cls = type(obj).__name__
    readers = {
        "PCMLikeNoiseModel": _pcm,
        "CustomDriftPCMLikeNoiseModel": _pcm,
        "StateIndependentNoiseModel": _state_independent,
        "ReRamWan2022NoiseModel": _reram,
    }
    if cls not in readers or not type(obj).__module__.startswith("aihwkit."):
        raise InputError(
            f"from_aihwkit: got {cls}; expected one of aihwkit's {', '.join(MODELS)} "
            "or an InferenceRPUConfig / TorchInferenceRPUConfig carrying one"
        )
    g_max = _g_max(obj)
    data: dict[str, Any] = {
        "schema": "xbar-preset",
        "schema_version": 1,
        "name": name or f"aihwkit-{cls.removesuffix('NoiseModel').lower()}",
        "description": description or f"aihwkit {cls} read by xbar.presets.from_aihwkit",
        "source": f"aihwkit {_aihwkit_version()} {cls}",
        "mapping": {
            "weight_bits": 0,
            "sign": "differential",
            "scale": "per-tensor",
            "tile_rows": _TILE,
            "tile_cols": _TILE,
            "conductance_max_uS": g_max,
        },
    }
    for section, table in readers[cls](obj, g_max).items():
        if table is not None:
            data[section] = table
    if "drift" in data:
        data["drift"]["compensation"] = compensation
    return Preset.from_dict(data, origin=f"from_aihwkit({cls})")


def _aihwkit_version() -> str:
    import aihwkit

    return getattr(aihwkit, "__version__", "")


def _compensation(comp: Any) -> str:
    if comp is None:
        return "none"
    if type(comp).__name__ == "GlobalDriftCompensation":
        return "global"
    raise InputError(
        f"from_aihwkit: drift_compensation = {type(comp).__name__}: expected GlobalDriftCompensation or None "
        "(xbar compensates drift globally or not at all)"
    )


def _g_max(nm: Any) -> float:
    """g_max of a single-pair converter with g_min = 0 (the only converter a preset expresses)."""
    conv = nm.g_converter
    cname = type(conv).__name__
    if cname != "SinglePairConductanceConverter":
        raise InputError(
            f"from_aihwkit: g_converter = {cname}: expected SinglePairConductanceConverter "
            "(xbar's analog storage is one differential pair per weight)"
        )
    if conv.g_min != 0:
        raise InputError(f"from_aihwkit: g_converter.g_min = {conv.g_min} uS: expected 0 (no offset conductance)")
    return float(nm.g_max)


def _reference(nm: Any, attr: str) -> float:
    ref = getattr(nm, attr, None)
    if ref is None:
        raise InputError(
            f"from_aihwkit: {type(nm).__name__}.{attr} is not set (aihwkit 1.1.0 drops the argument when "
            f"coefficients are given); set the attribute on the noise model"
        )
    return float(ref)


def _programming(coeffs, reference: float, scale: float) -> dict[str, Any] | None:
    if scale == 0 or not any(coeffs):
        return None
    return {"sigma_poly_uS": [float(c) for c in coeffs], "poly_reference_uS": reference, "scale": float(scale)}


def _pcm(nm: Any, g_max: float) -> dict[str, Any]:
    """``PCMLikeNoiseModel`` / ``CustomDriftPCMLikeNoiseModel`` (aihwkit/inference/noise/pcm.py, custom.py)."""
    drift: dict[str, Any] | None = None
    if nm.drift_scale != 0:
        custom = getattr(nm, "custom_drift_model", None)
        if custom is not None:
            table = {
                "nu_points_uS": [float(g) for g in custom["g_lst"]],
                "nu_mean_levels": [float(v) for v in custom["nu_mean_lst"]],
                "nu_std_levels": [float(v) for v in custom["nu_std_lst"]],
            }
        else:
            table = dict(PCM_DRIFT)
        drift = {"t0_s": float(nm.t_0), **table, "scale": float(nm.drift_scale)}
    read = None
    if nm.read_noise_scale != 0:
        read = {"kind": "pcm-1f", **PCM_READ, "t_read_s": float(nm.t_read), "t0_s": float(nm.t_0),
                "scale": float(nm.read_noise_scale)}
    ref = _reference(nm, "prog_coeff_g_max_reference")
    return {"programming": _programming(nm.prog_coeff, ref, nm.prog_noise_scale), "read_noise": read, "drift": drift}


def _state_independent(nm: Any, g_max: float) -> dict[str, Any]:
    """``StateIndependentNoiseModel`` (aihwkit/inference/noise/custom.py): no g_ref, constant nu, q = 1/g_max."""
    drift = None
    if nm.drift_scale != 0:
        mean, std = float(nm.drift_nu_mean), float(nm.drift_nu_std)
        drift = {
            "t0_s": float(nm.t_0),
            "nu_mean_log": [0.0, mean], "nu_mean_clip": [mean, mean],
            "nu_std_log": [0.0, std], "nu_std_clip": [std, std],
            "scale": float(nm.drift_scale),
        }
    read = None
    if nm.read_noise_scale != 0:
        read = {"kind": "pcm-1f", "coeff": 1.0 / g_max, "exponent": 0.0, "max": 1.0 / g_max,
                "t_read_s": float(nm.t_read), "t0_s": float(nm.t_0), "scale": float(nm.read_noise_scale)}
    return {"programming": _programming(nm.prog_coeff, g_max, nm.prog_noise_scale), "read_noise": read, "drift": drift}


def _reram(nm: Any, g_max: float) -> dict[str, Any]:
    """``ReRamWan2022NoiseModel`` (aihwkit/inference/noise/reram.py)."""
    ref = _reference(nm, "coeff_g_max_reference")
    times = sorted(float(t) for t in nm.coeff_dic)
    polys = [list(nm.coeff_dic[t]) for t in sorted(nm.coeff_dic)]
    if any(t <= 0 for t in times):
        raise InputError(f"from_aihwkit: ReRamWan2022NoiseModel.coeff_dic times {times}: expected > 0 seconds")
    degree = max(len(p) for p in polys)
    flat = [float(c) for p in polys for c in p + [0.0] * (degree - len(p))]
    read = None
    if nm.noise_scale != 0:
        read = {"kind": "resampled-poly", "times_s": times, "sigma_poly_uS": flat, "poly_reference_uS": ref,
                "scale": float(nm.noise_scale)}
    return {"programming": _programming(polys[0], ref, nm.noise_scale), "read_noise": read}


# ------------------------------------------------------------------ xbar -> aihwkit
def to_aihwkit(preset: Preset, rpu_config_class: Any = None) -> Any:
    """A plain aihwkit inference RPU config with aihwkit's own noise model for ``preset``.

    ``rpu_config_class`` defaults to ``InferenceRPUConfig`` (pass
    ``TorchInferenceRPUConfig`` for the pure-PyTorch tile that also runs on CUDA). The
    forward periphery is perfect and each layer is one tile (``max_input_size = 0``), so
    the per-tensor g_max scaling is the preset's; drift compensation is aihwkit's global
    one when the preset's drift asks for it. Raises :class:`InputError` naming every part
    of the preset that aihwkit's models cannot express.
    """
    from aihwkit.inference import GlobalDriftCompensation
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
    from aihwkit.simulator.configs import InferenceRPUConfig
    from aihwkit.simulator.parameters import IOParameters, MappingParameter

    plan = _plan(preset)
    g_max = preset.mapping.conductance_max_uS
    kwargs = dict(plan["kwargs"])
    kwargs["g_converter"] = SinglePairConductanceConverter(g_max=g_max)
    model_cls = _noise_class(plan["model"])
    nm = model_cls(**kwargs)
    for attr, value in plan.get("attrs", {}).items():
        setattr(nm, attr, value)  # aihwkit 1.1.0 ignores these constructor arguments (module docstring)
    drift = preset.drift
    comp = GlobalDriftCompensation() if drift is not None and drift.compensation == "global" else None
    cls = rpu_config_class or InferenceRPUConfig
    return cls(
        noise_model=nm,
        drift_compensation=comp,
        forward=IOParameters(is_perfect=True),
        mapping=MappingParameter(max_input_size=0, max_output_size=0),
    )


def _noise_class(name: str):
    from aihwkit.inference.noise.custom import StateIndependentNoiseModel
    from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel, PCMLikeNoiseModel
    from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel

    classes = (PCMLikeNoiseModel, CustomDriftPCMLikeNoiseModel, StateIndependentNoiseModel, ReRamWan2022NoiseModel)
    return {c.__name__: c for c in classes}[name]


def _plan(preset: Preset) -> dict[str, Any]:
    """Which aihwkit noise model expresses ``preset`` and with which arguments; InputError otherwise."""
    problems: list[str] = []
    cfg = preset.mapping
    if not cfg.analog:
        problems.append(
            f"[mapping].weight_bits = {cfg.weight_bits}: quantized weights bit-sliced onto {cfg.slices} device(s) "
            f"of {cfg.bits_per_device} bits per sign (aihwkit's converters store analog conductances, weight_bits = 0)"
        )
    if cfg.scale != "per-tensor":
        problems.append(f"[mapping].scale = {cfg.scale!r}: aihwkit scales each tile by its max|W| (per-tensor)")
    if preset.correlation is not None:
        problems.append("[correlation]: spatially correlated noise (aihwkit's devices are independent)")
    if preset.bitflip is not None:
        problems.append("[bitflip]: bit flips on stored bit patterns")
    if preset.injection is not None and not preset.injection.is_gaussian:
        problems.append(f"[injection].family = {preset.injection.kind!r}: aihwkit's weight noise is Gaussian")
    prog = preset.programming
    coeffs: list[float] = [0.0]
    reference = cfg.conductance_max_uS
    prog_scale = 0.0
    if prog is not None and cfg.analog:
        if prog.has_offsets or prog.level_multipliers is not None:
            problems.append("[programming]: per-level tables need discrete levels")
        if prog.sigma_poly_uS is not None:
            coeffs, reference = list(prog.sigma_poly_uS), prog.poly_reference_uS
        else:
            coeffs = [prog.sigma_d]
        prog_scale = prog.scale
    read, drift = preset.read_noise, preset.drift
    if read is not None and read.kind == "resampled-poly":
        return _reram_plan(preset, problems, coeffs, reference, prog_scale)
    pcm_read = read is None or (read.kind == "pcm-1f" and all(
        math.isclose(getattr(read, k), v, rel_tol=1e-12) for k, v in PCM_READ.items()))
    flat_read = read is None or (read.kind == "pcm-1f" and read.exponent == 0 and read.coeff <= read.max)
    log_pcm = drift is not None and drift.nu_mean_log is not None and all(
        _close(getattr(drift, k), v) for k, v in PCM_DRIFT.items())
    pcm_drift = drift is None or log_pcm or drift.nu_points_uS is not None
    constant = _constant_drift(drift)
    if read is not None and read.kind == "gaussian":
        problems.append("[read_noise] kind = 'gaussian': aihwkit's models have 1/f read noise relative to G(t)")
    if drift is not None and read is not None and not math.isclose(drift.t0_s, read.t0_s):
        problems.append(f"[drift].t0_s = {drift.t0_s} and [read_noise].t0_s = {read.t0_s}: aihwkit has one t_0")
    t0 = drift.t0_s if drift is not None else (read.t0_s if read is not None else 20.0)
    t_read = read.t_read_s if read is not None else 250e-9
    common = {"t_0": t0, "t_read": t_read, "prog_noise_scale": prog_scale,
              "read_noise_scale": read.scale if read is not None else 0.0,
              "drift_scale": drift.scale if drift is not None else 0.0}
    if pcm_read and pcm_drift:
        plan = {"model": "PCMLikeNoiseModel", "attrs": {"prog_coeff_g_max_reference": reference},
                "kwargs": {"prog_coeff": coeffs, "prog_coeff_g_max_reference": reference, **common}}
        if drift is not None and drift.nu_points_uS is not None:
            if drift.nu_points_uS[0] > 0 or drift.nu_points_uS[-1] < cfg.conductance_max_uS:
                problems.append(
                    f"[drift].nu_points_uS = {list(drift.nu_points_uS)}: aihwkit's custom drift table must span "
                    f"0 to g_max = {cfg.conductance_max_uS} uS"
                )
            plan["model"] = "CustomDriftPCMLikeNoiseModel"
            plan["kwargs"]["custom_drift_model"] = {
                "g_lst": list(drift.nu_points_uS),
                "nu_mean_lst": list(drift.nu_mean_levels),
                "nu_std_lst": list(drift.nu_std_levels or [0.0] * len(drift.nu_points_uS)),
            }
    elif flat_read and (drift is None or constant is not None):
        mean, std = constant or (0.0, 0.0)
        read_scale = read.scale * read.coeff * cfg.conductance_max_uS if read is not None else 0.0
        sig = [c * cfg.conductance_max_uS / reference for c in coeffs]  # no g_ref in this model
        plan = {"model": "StateIndependentNoiseModel",
                "kwargs": {"prog_coeff": sig, "drift_nu_mean": mean, "drift_nu_std": std,
                           **common, "read_noise_scale": read_scale}}
    else:
        if not (pcm_read or flat_read) and read is not None and read.kind == "pcm-1f":
            problems.append(
                f"[read_noise] coeff = {read.coeff}, exponent = {read.exponent}, max = {read.max}: aihwkit has "
                f"PCM's {PCM_READ['coeff']}, {PCM_READ['exponent']}, {PCM_READ['max']} or a state-independent "
                "read noise (exponent = 0)"
            )
        if drift is not None and not pcm_drift and constant is None:
            problems.append(
                "[drift]: exponents other than PCM's log fit, a conductance table (nu_points_uS) or a constant"
            )
        if not problems:
            problems.append(
                "[read_noise] and [drift]: PCM read noise needs PCM-like drift and a state-independent one a "
                "constant drift exponent"
            )
        plan = {}
    if problems:
        raise InputError(f"preset {preset.name}: aihwkit cannot express {'; '.join(problems)}")
    return plan


def _reram_plan(preset: Preset, problems: list[str], coeffs, reference, prog_scale) -> dict[str, Any]:
    read = preset.read_noise
    polys = read.polynomials()
    if preset.drift is not None:
        problems.append("[drift] together with resampled-poly read noise (aihwkit's ReRAM model has no drift)")
    if not (_close(list(polys[0]), _pad(coeffs, len(polys[0]))) and math.isclose(reference, read.poly_reference_uS)
            and math.isclose(prog_scale, read.scale)):
        problems.append(
            "[programming]: aihwkit's ReRAM model programs with the resampled polynomial of the first time "
            "(same coefficients, reference and scale)"
        )
    if problems:
        raise InputError(f"preset {preset.name}: aihwkit cannot express {'; '.join(problems)}")
    return {
        "model": "ReRamWan2022NoiseModel",
        "attrs": {"coeff_g_max_reference": read.poly_reference_uS},
        "kwargs": {"coeff_dic": {float(t): list(p) for t, p in zip(read.times_s, polys)},
                   "noise_scale": read.scale, "coeff_g_max_reference": read.poly_reference_uS},
    }


def _pad(coeffs, n: int) -> list[float]:
    return list(coeffs) + [0.0] * (n - len(coeffs))


def _close(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15) for x, y in zip(a, b))


def _constant_drift(drift) -> tuple[float, float] | None:
    """(nu_mean, nu_std) when ``drift``'s exponents do not depend on the conductance, else None."""
    if drift is None or drift.nu_mean_log is None or drift.nu_mean_log[0] != 0:
        return None
    if drift.nu_std_log is not None and drift.nu_std_log[0] != 0:
        return None
    mean = min(max(drift.nu_mean_log[1], drift.nu_mean_clip[0]), drift.nu_mean_clip[1])
    std = 0.0
    if drift.nu_std_log is not None:
        std = min(max(drift.nu_std_log[1], drift.nu_std_clip[0]), drift.nu_std_clip[1])
    return mean, std
