"""Every numeric preset field has a physical bound, and a value outside it is refused in one line naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.test_presets import BASE
from xbar import presets
from xbar.errors import InputError
from xbar.presets.schema import BOUNDS, RENAMES, SECTIONS

# (TOML appended to BASE, or a [mapping] replacing it, and the bound the message must state)
OUT_OF_BOUNDS = [
    ("[programming]\nsigma_d = 1e308\n", "[programming].sigma_d = 1e+308: expected 0 <= sigma_d <= 100 level steps"),
    ("[mapping]\nweight_bits = 4\nbits_per_device = 2\ntile_rows = 100000000000000000\n",
     "[mapping].tile_rows = 100000000000000000: expected 1 <= tile_rows <= 65536 devices"),
    ("[injection]\nfamily = 'right-censored'\nthreshold = -100.0\n",
     "[injection].threshold = -100.0: expected -10 <= threshold <= 10 sigmas"),
    ("[correlation]\nsigma = 0.1\nlength_rows = 0.0\n", "[correlation].length_rows = 0.0: expected 0.1 <= length_rows"),
    ("[correlation]\nsigma = 0.1\nlength_rows = 2.0\nrank = 100000000\n",
     "[correlation].rank = 100000000: expected 0 <= rank <= 4096"),
    ("[programming]\nsigma_d = 0.1\nlevel_multipliers = [1.0, 1.0, 1e9, 1.0]\n", "level_multipliers"),
    ("[mapping]\nweight_bits = 0\nconductance_max_uS = 1e9\n", "expected 0 < conductance_max_uS <= 10000 uS"),
    ("[drift]\nt0_s = 1e30\nnu_mean_levels = [0.0, 0.1, 0.1, 0.1]\n", "expected 0 < t0_s <= 1e+09 s"),
    ("[drift]\nnu_mean_levels = [0.0, 0.1, 5.0, 0.1]\n", "nu_mean_levels = [0.0, 0.1, 5.0, 0.1]: expected 0 <="),
]


@pytest.mark.parametrize(("extra", "message"), OUT_OF_BOUNDS, ids=[m[:40] for _, m in OUT_OF_BOUNDS])
def test_out_of_bound_value_is_refused_with_the_bound(extra: str, message: str, tmp_path: Path) -> None:
    text = BASE.split("[mapping]")[0] + extra if extra.startswith("[mapping]") else BASE + extra
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        presets.load(path)
    msg = str(info.value)
    assert message in msg and str(path) in msg and "\n" not in msg


def test_every_numeric_field_has_a_bound() -> None:
    """A new numeric field must say its physical range."""
    missing = []
    for section in SECTIONS:
        inverse = {v: k for k, v in RENAMES.get(section, {}).items() if v}
        for f in dataclasses.fields(SECTIONS[section]):
            if any(t in str(f.type) for t in ("int", "float")):
                key = inverse.get(f.name, f.name)
                if (section, key) not in BOUNDS:
                    missing.append(f"[{section}].{key}")
    assert not missing, missing


def test_shipped_presets_are_inside_the_bounds_and_overrides_are_checked() -> None:
    for name in presets.names():
        presets.load(name)
    with pytest.raises(InputError, match="sigma_d = 1e"):
        presets.load("rram-uniform", sigma_d=1e308)
    assert presets.load("rram-uniform", sigma_d=100.0).programming.sigma_d == 100.0  # the bound itself is allowed
