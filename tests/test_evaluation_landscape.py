"""Loss landscapes (DAT Sec. III-C): normalised device-noise directions and the plane through three models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from tests.helpers import digits, lenet, one_thread, tiny_bn
from xbar import presets
from xbar.evaluation import device_directions, landscape_1d, landscape_2d


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


def _loss(model, split, limit=None) -> float:
    x, y = split.train.tensors
    if limit:
        x, y = x[:limit], y[:limit]
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_directions_are_device_noise_normalised_by_the_frobenius_norm():
    model = lenet()
    dirs, norms = device_directions(model, "rram-uniform", directions=3, seed=1)
    for d in dirs:
        total = math.sqrt(sum(float((v.double() ** 2).sum()) for v in d.values()))
        assert total == pytest.approx(1.0, rel=1e-6)
    assert len(set(norms)) == 3
    # the raw direction is the programming noise without quantization: zero-mean, device-sized
    raw, _ = device_directions(model, "rram-uniform", directions=1, seed=1, normalize="none")
    dm = presets.load("rram-uniform").device_model()
    w = model.classifier[0].weight.detach()
    z = (raw[0]["classifier.0"] / dm.weight_std(w)).double().flatten()  # should be N(0, 1) each
    n = z.numel()
    assert abs(float(z.mean())) < stats.norm.ppf(1 - 1e-3 / 2) / math.sqrt(n)
    chi2 = (n - 1) * float(z.var())
    assert stats.chi2.ppf(1e-3 / 2, n - 1) < chi2 < stats.chi2.ppf(1 - 1e-3 / 2, n - 1)
    layer, _ = device_directions(model, "rram-uniform", directions=1, seed=1, normalize="layer")
    for name, v in layer[0].items():
        mod = dict(model.named_modules())[name]
        assert float(v.norm()) == pytest.approx(float(mod.weight.detach().norm()), rel=1e-5)
    with pytest.raises(ValueError, match="zero"):
        device_directions(model, presets.load("rram-uniform", sigma_d=0.0))


def test_1d_landscape_is_clean_at_zero_and_rises(tmp_path):
    model, split = lenet(), digits()
    r = landscape_1d(model, split.train, "rram-uniform", alphas=[-20.0, 0.0, 20.0], directions=2, limit=200,
                     progress=False, split="train")
    clean = _loss(model, split, 200)
    np.testing.assert_allclose(r.loss[:, 1], clean, rtol=1e-5)
    assert np.all(r.loss[:, 0] > clean) and np.all(r.loss[:, 2] > clean)
    assert r.loss.shape == (2, 3)
    d = json.loads(json.dumps(r.to_dict()))
    assert {"dims", "alphas", "loss", "accuracy", "mean_loss", "normalize", "noise_norm"} <= set(d)
    default = landscape_1d(model, split.train, "rram-uniform", directions=1, limit=50, progress=False)
    assert default.alphas.size == 21 and default.alphas[-1] == pytest.approx(2 * default.noise_norm)
    assert r.plot(tmp_path / "l1.png").exists()


def test_2d_surface_passes_through_the_three_models(tmp_path):
    split = digits()
    sgd, a, b = tiny_bn(0), tiny_bn(1), tiny_bn(2)
    r = landscape_2d(sgd, a, b, split.train, alphas=[0.0, 0.5, 1.0], betas=[0.0, 0.5], limit=300,
                     progress=False, batch_instances=4)
    assert r.loss.shape == (3, 2)
    assert r.loss[0, 0] == pytest.approx(_loss(sgd, split, 300), rel=1e-4)  # (0, 0) = w_SGD
    assert r.loss[2, 0] == pytest.approx(_loss(a, split, 300), rel=1e-4)  # (1, 0) = w_A
    assert r.loss[1, 1] == pytest.approx(_loss(b, split, 300), rel=1e-4)  # (0.5, 0.5) = w_B
    d = json.loads(json.dumps(r.to_dict()))
    assert d["points"] == {"SGD": [0.0, 0.0], "A": [1.0, 0.0], "B": [0.5, 0.5]}
    assert r.plot(tmp_path / "l2.png").exists()


def test_2d_default_grid_is_the_papers_and_architectures_must_match():
    from xbar.evaluation import DAT_ALPHAS, DAT_BETAS

    assert DAT_ALPHAS[0] == -0.5 and DAT_ALPHAS[-1] == 1.5 and len(DAT_ALPHAS) == 21
    assert DAT_BETAS[0] == -0.3 and DAT_BETAS[-1] == 0.8
    with pytest.raises(ValueError, match="same parameters"):
        landscape_2d(tiny_bn(0), lenet(), tiny_bn(1), digits().train, progress=False)


def test_an_xbar_data_split_gives_the_named_part():
    model, split = lenet(), digits()
    kw = dict(alphas=[0.0], directions=1, progress=False)
    train = landscape_1d(model, split, "rram-uniform", **kw)
    test = landscape_1d(model, split, "rram-uniform", split="test", **kw)
    assert train.split == "train" and train.num_images == len(split.train)
    assert test.split == "test" and test.num_images == len(split.test)
    np.testing.assert_allclose(train.loss[0, 0], _loss(model, split), rtol=1e-5)
    with pytest.raises(ValueError, match="split"):
        landscape_1d(model, split, "rram-uniform", split="val", **kw)
