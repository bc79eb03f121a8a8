"""``xbar fit`` chooses among Kronecker, low-rank and dense covariances of ``/array_maps``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import torch

import xbar
from tests.helpers import cli_json, cli_refused
from xbar import presets
from xbar.calibration import ArrayMaps, Measurements, fit, write_measurements
from xbar.calibration.covariance import CovarianceSelector
from xbar.calibration.synthetic import kronecker_maps
from xbar.cli import main
from xbar.presets import Preset

R, C = 8, 8


def expected_relative_error(cov: np.ndarray, n: int) -> float:
    """RMS of |S - Sigma|_F / |Sigma|_F for the covariance S of n Gaussian vectors with a known
    mean: E |S - Sigma|_F^2 = (|Sigma|_F^2 + tr(Sigma)^2) / n. The tests allow 1.5 times it
    (|S - Sigma|_F^2 is a sum of many terms and concentrates about its mean)."""
    return float(np.sqrt((1 + np.trace(cov) ** 2 / np.sum(cov**2)) / n))


def stripe_maps(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps of three separable sine/cosine modes (column stripes, not a Kronecker exponential
    kernel) plus a small independent part; returns (maps, true covariance)."""
    rng = np.random.default_rng(seed)
    r, c = np.arange(R), np.arange(C)
    modes = np.stack([np.outer(np.sin(np.pi * (i + 1) * (r + 0.5) / R), np.cos(np.pi * i * c / C)) for i in range(3)])
    modes = modes.reshape(3, -1)
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)
    amp = np.array([0.9, 0.6, 0.4])
    maps = (rng.standard_normal((n, 3)) * amp) @ modes + 0.05 * rng.standard_normal((n, R * C))
    cov = (modes.T * amp**2) @ modes + 0.05**2 * np.eye(R * C)
    return maps.reshape(n, R, C), cov


def measurement_file(path: Path, maps: np.ndarray) -> Path:
    m = Measurements(device="synthetic stripes", created="2026-01-01T00:00:00Z", levels=4, array_maps=ArrayMaps(maps))
    return write_measurements(path, m)


def test_selector_keeps_kronecker_for_kronecker_maps_and_prefers_low_rank_for_stripes() -> None:
    rng = np.random.default_rng(1)
    kron = CovarianceSelector().fit(ArrayMaps(kronecker_maps(rng, 60, R, C, 0.3, 2.0, 3.0, 0.1)))
    assert kron.chosen == "kronecker-exponential"
    assert set(kron.heldout_loglik) == {"kronecker-exponential", "low-rank", "dense"}
    stripes = CovarianceSelector().fit(ArrayMaps(stripe_maps()[0]))
    assert stripes.chosen == "low-rank" and stripes.rank >= 3
    assert stripes.heldout_loglik["low-rank"] > stripes.heldout_loglik["kronecker-exponential"]
    assert stripes.frobenius_rel["low-rank"] < stripes.frobenius_rel["kronecker-exponential"]
    assert stripes.aic["low-rank"] < stripes.aic["kronecker-exponential"]


def test_xbar_fit_writes_a_low_rank_covariance_with_its_sidecar(tmp_path: Path, capsys) -> None:
    maps, cov = stripe_maps()
    src = measurement_file(tmp_path / "stripes.h5", maps)
    out = tmp_path / "stripes.toml"
    d = cli_json(capsys, ["fit", str(src), "--out", str(out), "--json", "--bootstrap", "0"])
    side = tmp_path / "stripes.covariance.h5"
    assert d["covariance_path"] == str(side) and side.is_file()
    cv = d["covariance"]
    assert cv["chosen"] == "low-rank"
    assert cv["heldout_loglik"]["low-rank"] > cv["heldout_loglik"]["kronecker-exponential"]  # both fits reported
    assert {"kronecker-exponential", "low-rank", "dense"} <= set(cv["aic"]) and "frobenius_rel" in cv
    assert d["preset"]["correlation"]["kind"] == "low-rank"
    doc = tomllib.loads(out.read_text())
    assert doc["correlation"]["file"] == side.name and len(doc["correlation"]["sha256"]) == 64
    assert doc["provenance"]["goodness_of_fit"]["correlation_model"] == "low-rank"
    p = presets.load(out)
    assert presets.dumps(p, relative_to=tmp_path) == out.read_text()  # loaded and dumped again: the same bytes
    assert p.correlation.mean == doc["correlation"]["mean"] != 0
    # the preset holds the correlated part (top eigenpairs minus the independent variance): it
    # reproduces the true covariance's correlated part to within the sampling error of 60 maps
    fitted = p.correlation.to_dense().numpy()
    truth = cov - 0.05**2 * np.eye(R * C)
    assert np.linalg.norm(fitted - truth) / np.linalg.norm(truth) < 1.5 * expected_relative_error(truth, 60)
    # and a Monte Carlo draw through it runs
    w = torch.linspace(0.1, 1.0, R * C).reshape(C, R)
    assert xbar.sample_weights(w, p, 3).shape == (3, C, R)
    # the text report names both fits; no overwrite without --force, nothing written
    before = side.read_bytes()
    cli_refused(capsys, ["fit", str(src), "--out", str(out), "--bootstrap", "0"], "already exists")
    assert side.read_bytes() == before
    out2 = tmp_path / "again.toml"
    side.rename(tmp_path / "moved.h5")
    (tmp_path / "again.covariance.h5").write_bytes(b"not mine")
    # the sidecar name is taken
    cli_refused(capsys, ["fit", str(src), "--out", str(out2), "--bootstrap", "0"], "again.covariance.h5: already exists")
    assert not out2.exists()
    assert main(["fit", str(src), "--out", str(out2), "--bootstrap", "0", "--force"]) == 0
    text = capsys.readouterr().out
    assert "held-out log-lik / map, low-rank" in text and "<- chosen" in text and "kronecker-exponential" in text
    assert (tmp_path / "again.covariance.h5").read_bytes()[:4] == b"\x89HDF"


def test_fit_chooses_dense_for_a_full_rank_covariance() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((R * C, R * C)) / 8
    cov = 0.05 * a @ a.T
    maps = rng.multivariate_normal(np.zeros(R * C), cov, size=400).reshape(400, R, C)
    m = Measurements(device="dense", created="2026-01-01T00:00:00Z", levels=4, array_maps=ArrayMaps(maps))
    r = fit(m, bootstrap=0, seed=0)
    assert r.covariance.chosen == "dense" and r.covariance.dense_estimator == "sample"
    assert r.covariance.heldout_loglik[r.covariance.chosen] > r.covariance.heldout_loglik["kronecker-exponential"]
    p = r.preset
    assert p.correlation.kind == "dense" and np.shape(r.preset_dict["correlation"]["covariance"]) == (R * C, R * C)
    assert Preset.from_dict(r.preset_dict).to_dict() == r.preset_dict  # inline numbers round-trip
    rel = np.linalg.norm(p.correlation.to_dense().numpy() - cov) / np.linalg.norm(cov)
    assert rel < 1.5 * expected_relative_error(cov, 400)
    assert fit(m, bootstrap=0, compare_covariance=False).preset_dict["correlation"]["kind"] == "kronecker-exponential"


def test_too_few_maps_keep_the_kronecker_fit() -> None:
    rng = np.random.default_rng(3)
    m = Measurements(device="few", created="2026-01-01T00:00:00Z", levels=4,
                     array_maps=ArrayMaps(kronecker_maps(rng, 3, R, C, 0.3, 2.0, 3.0, 0.1)))
    r = fit(m, bootstrap=0)
    assert r.covariance is None and any("too few maps" in n for n in r.notes)
