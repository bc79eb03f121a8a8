"""Measured tile covariances in presets (``[correlation] kind = "dense" | "low-rank"``, DAT III-A).

Covariance checks use the likelihood-ratio test of Sigma = I on whitened samples with a
known zero mean: with S = Y^T Y / n, ``n (tr S - log det S - d)`` is asymptotically
chi-square with d (d + 1) / 2 degrees of freedom, so the acceptance level (p > 1e-3)
follows from the sample size; each test also shows the statistic rejecting a wrong
covariance, so it can fail.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import xbar
from tests.helpers import cli_refused
from xbar import presets
from xbar.devices import KroneckerCovariance
from xbar.hil import EmulatedBackend
from xbar.presets import Preset
from xbar.presets.covariance import sha256_of, write_sidecar
from xbar.training import DAT, NoiseProfile, noisy_parameters

TR, TC = 4, 3  # the tile: 4 rows (inputs) x 3 columns (outputs), d = 12 devices
D = TR * TC


def target_covariance() -> torch.Tensor:
    """A non-Kronecker covariance: a Kronecker kernel plus a rank-one 'stripe' plus a diagonal."""
    g = torch.Generator().manual_seed(3)
    base = KroneckerCovariance(0.3, 1.5, 2.0).to_dense(TR, TC)
    u = torch.randn(D, 1, generator=g, dtype=torch.float64)
    return base + 0.02 * (u @ u.T) + 0.01 * torch.eye(D, dtype=torch.float64)


def preset_dict(correlation: dict, **mapping) -> dict:
    m = {"weight_bits": 4, "bits_per_device": 4, "sign": "magnitude", "tile_rows": TR, "tile_cols": TC, **mapping}
    return {"schema": "xbar-preset", "name": "measured", "mapping": m, "correlation": correlation}


def lrt_identity(y: torch.Tensor) -> float:
    """p-value of the LRT of cov = I for zero-mean rows of ``y`` [n, d]."""
    y = y.double()
    n, d = y.shape
    s = y.T @ y / n
    stat = n * (float(torch.trace(s)) - float(torch.logdet(s)) - d)
    return float(stats.chi2.sf(stat, d * (d + 1) // 2))


def layer_blocks(dev: torch.Tensor, s: float) -> torch.Tensor:
    """[n, 3, 6] weight deviations of a 6-input x 3-output layer -> [n, 18] in device order:
    tile 1 (rows 0-3, d = 12) then the partial tile 2 (rows 4-5, d = 6), row-major, level units."""
    x = dev.transpose(1, 2) / s  # crossbar layout [n, rows = 6, cols = 3]
    return torch.cat([x[:, :4].reshape(len(x), -1), x[:, 4:].reshape(len(x), -1)], dim=1)


def joint_covariance(c: torch.Tensor) -> torch.Tensor:
    """Tiles are independent; the partial tile has the marginal (top-left) block of Sigma."""
    return torch.block_diag(c, c[:6, :6])


def whiten(x: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve_triangular(torch.linalg.cholesky(cov), x.double().T, upper=False).T


WEIGHTS = torch.linspace(0.05, 1.0, 18).reshape(3, 6)  # positive: no magnitude sign flips; s = 1 / 15


def test_dense_preset_reproduces_covariance_in_sample_weights() -> None:
    c = target_covariance()
    p = Preset.from_dict(preset_dict({"kind": "dense", "covariance": c.tolist()}))
    dm = p.device_model()
    n = 6000
    x = xbar.sample_weights(WEIGHTS, p, n, generator=torch.Generator().manual_seed(0))
    s = 1.0 / 15
    dev = layer_blocks(x - dm.target(WEIGHTS), s)
    assert lrt_identity(whiten(dev, joint_covariance(c))) > 1e-3
    # the statistic has power: the Kronecker part alone (the covariance without the stripe) is rejected
    wrong = KroneckerCovariance(0.3, 1.5, 2.0).to_dense(TR, TC) + 0.01 * torch.eye(D, dtype=torch.float64)
    assert lrt_identity(whiten(dev, joint_covariance(wrong))) < 1e-6
    # per-instance seeds: the same instances however they are batched
    a = xbar.sample_weights(WEIGHTS, p, 4, seeds=[1, 2, 3, 4])
    b = torch.cat([xbar.sample_weights(WEIGHTS, p, 2, seeds=[1, 2]), xbar.sample_weights(WEIGHTS, p, 2, seeds=[3, 4])])
    torch.testing.assert_close(a, b)


def test_singular_dense_covariance_is_sampled_through_its_eigenvectors() -> None:
    g = torch.Generator().manual_seed(1)
    v = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))[0]
    c = (v * torch.tensor([0.5, 0.2, 0.1], dtype=torch.float64)) @ v.T  # PSD, rank 3
    p = Preset.from_dict(preset_dict({"kind": "dense", "covariance": c.tolist()}))
    w = torch.linspace(0.05, 1.0, 12).reshape(3, 4)  # exactly one tile
    n = 4000
    dev = (xbar.sample_weights(w, p, n, generator=g) - p.device_model().target(w)).transpose(1, 2).reshape(n, -1) * 15
    coef = dev.double() @ v  # coordinates in the eigenbasis: N(0, diag(0.5, 0.2, 0.1))
    assert lrt_identity(coef / torch.tensor([0.5, 0.2, 0.1], dtype=torch.float64).sqrt()) > 1e-3
    assert float((dev.double() - coef @ v.T).abs().max()) < 1e-4  # nothing outside the span


def test_low_rank_preset_reproduces_covariance_in_sample_weights() -> None:
    g = torch.Generator().manual_seed(2)
    v = torch.linalg.qr(torch.randn(D, 4, generator=g, dtype=torch.float64))[0]
    lam = torch.tensor([0.4, 0.1, 0.3, 0.05], dtype=torch.float64)  # any order: sorted on load
    p = Preset.from_dict(preset_dict({"kind": "low-rank", "eigenvalues": lam.tolist(), "eigenvectors": v.tolist()}))
    w = torch.linspace(0.05, 1.0, 12).reshape(3, 4)
    n = 5000
    dev = (xbar.sample_weights(w, p, n, generator=g) - p.device_model().target(w)).transpose(1, 2).reshape(n, -1) * 15
    coef = dev.double() @ v
    assert lrt_identity(coef / lam.sqrt()) > 1e-3
    assert lrt_identity(coef / lam.flip(0).sqrt()) < 1e-6  # eigenvalues paired with the wrong vectors
    assert float((dev.double() - coef @ v.T).abs().max()) < 1e-4
    # DAT-Fast's rank 2 keeps the two largest eigenpairs (0.4 and 0.3)
    fast = Preset.from_dict(preset_dict({"kind": "low-rank", "eigenvalues": lam.tolist(), "eigenvectors": v.tolist(),
                                         "rank": 2}))
    dev2 = (xbar.sample_weights(w, fast, 2000, generator=g) - fast.device_model().target(w)).transpose(1, 2)
    coef2 = dev2.reshape(2000, -1).double() * 15 @ v
    assert float(coef2[:, [1, 3]].abs().max()) < 1e-4
    assert lrt_identity(coef2[:, [0, 2]] / lam[[0, 2]].sqrt()) > 1e-3


def test_training_injection_and_emulated_chip_use_the_measured_covariance() -> None:
    c = target_covariance()
    p = Preset.from_dict(preset_dict({"kind": "dense", "covariance": c.tolist()}))
    dm = p.device_model()
    g = torch.Generator().manual_seed(4)
    n = 5000
    inj = torch.stack([dm.inject_noise(WEIGHTS, generator=g) for _ in range(n)])
    assert lrt_identity(whiten(layer_blocks(inj, 1.0 / 15), joint_covariance(c))) > 1e-3
    n = 3000
    chip = EmulatedBackend(p, seed=5, n_tiles=n)
    target = torch.full((TR, TC), 7.0)
    for t in range(n):
        chip.program(t, target)
    dev = torch.stack([chip.read(t) - target for t in range(n)]).reshape(n, -1)
    assert lrt_identity(whiten(dev, c)) > 1e-3
    assert lrt_identity(whiten(dev, 2 * c)) < 1e-6


def test_sidecar_files_round_trip(tmp_path: Path) -> None:
    c = target_covariance()
    inline = Preset.from_dict(preset_dict({"kind": "dense", "covariance": c.tolist()}))
    for suffix in (".npy", ".h5"):
        side = tmp_path / f"cov{suffix}"
        digest = write_sidecar(inline.correlation, side)
        assert digest == sha256_of(side)
        d = preset_dict({"kind": "dense", "file": side.name, "sha256": digest})
        (tmp_path / f"p{suffix}.toml").write_text(presets.dumps(Preset.from_dict(d, base_dir=tmp_path)))
        loaded = presets.load(tmp_path / f"p{suffix}.toml")
        torch.testing.assert_close(loaded.correlation.to_dense(), c)
        assert loaded.correlation == inline.correlation
        # saved elsewhere, the preset names the sidecar by a path that still resolves
        out = presets.save(loaded, tmp_path / "sub" / f"copy{suffix}.toml")
        assert presets.load(out).correlation == inline.correlation
        # saved next to it, by its name
        again = presets.save(loaded, tmp_path / f"again{suffix}.toml")
        assert tomllib.loads(again.read_text())["correlation"]["file"] == side.name
        assert loaded.with_overrides(**{"correlation.rank": 2}).correlation.rank == 2
    lr = inline.correlation.low_rank(0)
    v, lam = torch.linalg.eigh(c)[1], torch.linalg.eigvalsh(c)
    low = Preset.from_dict(preset_dict({"kind": "low-rank", "eigenvalues": lam.tolist(), "eigenvectors": v.tolist()}))
    for suffix in (".npy", ".h5"):  # .npy stores A_k = V_k D_k^(1/2), .h5 the eigenpairs
        side = tmp_path / f"low{suffix}"
        digest = write_sidecar(low.correlation, side)
        back = Preset.from_dict(preset_dict({"kind": "low-rank", "file": side.name, "sha256": digest}), base_dir=tmp_path)
        torch.testing.assert_close(back.correlation.to_dense(), lr.to_dense())


def _refused(tmp_path: Path, capsys, correlation: dict, expect: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(presets.dumps(Preset.from_dict(preset_dict({"kind": "kronecker-exponential", "sigma": 0.1}))))
    text = path.read_text().split("[correlation]")[0]
    import tomli_w

    path.write_text(text + tomli_w.dumps({"correlation": correlation}))
    cli_refused(capsys, ["presets", "show", str(path)], str(path), "[correlation]", expect)


def test_bad_covariances_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    c = target_covariance()
    asym = c.clone()
    asym[0, 1] += 0.01
    _refused(tmp_path, capsys, {"kind": "dense", "covariance": asym.tolist()}, "not symmetric")
    nonpsd = c - 0.2 * torch.eye(D, dtype=torch.float64)  # smallest eigenvalue below 0
    assert float(torch.linalg.eigvalsh(nonpsd)[0]) < -0.05
    _refused(tmp_path, capsys, {"kind": "dense", "covariance": nonpsd.tolist()}, "not positive semidefinite")
    _refused(tmp_path, capsys, {"kind": "dense", "covariance": c[:9, :9].tolist()}, "expected [12, 12]")
    _refused(tmp_path, capsys, {"kind": "dense", "covariance": c.tolist(), "rows": 3, "cols": 4},
             "expected the tile of [mapping], 4 x 3")
    _refused(tmp_path, capsys, {"kind": "low-rank", "eigenvalues": [1.0, 0.5], "eigenvectors": torch.ones(D, 2).tolist()},
             "not orthonormal")
    _refused(tmp_path, capsys, {"kind": "low-rank", "eigenvalues": [1.0, -0.5],
                                "eigenvectors": torch.eye(D)[:, :2].tolist()}, "negative")
    side = tmp_path / "cov.npy"
    np.save(side, c.numpy())
    good = sha256_of(side)
    _refused(tmp_path, capsys, {"kind": "dense", "file": "cov.npy", "sha256": "0" * 64}, f"hashes to {good}")
    _refused(tmp_path, capsys, {"kind": "dense", "file": "gone.npy", "sha256": good}, "no such file")
    _refused(tmp_path, capsys, {"kind": "dense", "file": "cov.npy"}, "expected the file's SHA-256")
    _refused(tmp_path, capsys, {"kind": "dense"}, "covariance: missing")
    _refused(tmp_path, capsys, {"kind": "dense", "covariance": c.tolist(), "sigma": 1.0}, "unknown field")
    np.save(side, np.asarray(c.numpy())[:5, :5])  # the file changed after the preset was written
    _refused(tmp_path, capsys, {"kind": "dense", "file": "cov.npy", "sha256": good}, "hashes to")


def test_dat_runs_with_a_dense_preset() -> None:
    torch.manual_seed(0)
    c = target_covariance()
    p = Preset.from_dict(preset_dict({"kind": "dense", "covariance": c.tolist()}))
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    targets = noisy_parameters(m, p, "last")
    g = torch.Generator().manual_seed(0)
    for rank in (3, None):  # DAT-Fast (top-3 eigenpairs of the measured Sigma) and DAT-Full
        opt = DAT(torch.optim.SGD(m.parameters(), lr=0.05), targets, alpha=2.0, rank=rank,
                  others=noisy_parameters(m, p)[:1], generator=g)

        def closure():
            m.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            return loss

        before = m[3].weight.detach().clone()
        assert math.isfinite(float(opt.step(closure).detach()))
        assert not torch.equal(before, m[3].weight.detach())
    # DAT-Fast's eta lies in the span of each tile's top-3 eigenvectors of Sigma
    prof = NoiseProfile(p.device_model(), rank=3, independent=False)
    w = torch.linspace(0.05, 1.0, 12).reshape(3, 4)
    eta = torch.stack([prof.sample(w, g) for _ in range(50)]).transpose(1, 2).reshape(50, -1).double()
    vals, vecs = torch.linalg.eigh(c)
    top = vecs[:, -3:]
    assert float((eta - eta @ top @ top.T).abs().max()) < 1e-5 * float(eta.abs().max())


def test_monte_carlo_runs_with_a_dense_preset() -> None:
    from tests.helpers import digits, lenet, one_thread
    from xbar.evaluation import monte_carlo

    c = target_covariance()
    p = Preset.from_dict(preset_dict({"kind": "dense", "covariance": (4 * c).tolist()}))
    with one_thread():
        test = digits().test
        a = monte_carlo(lenet(), test, p, n=6, seed=3, metrics=("accuracy",), progress=False, limit=200)
        b = monte_carlo(lenet(), test, p, n=6, seed=3, metrics=("accuracy",), progress=False, limit=200,
                        batch_instances=2)
    np.testing.assert_allclose(a.values(), b.values())
    assert len(set(np.round(a.values(), 6))) > 1  # instances differ
