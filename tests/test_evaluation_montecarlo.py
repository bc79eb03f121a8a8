"""Monte Carlo engine: stacked forward = per-instance forward; results independent of batching."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import requires_cuda
from tests.helpers import TinyBN, digits, lenet, one_thread, tiny_bn
from xbar import presets
from xbar.evaluation import (
    StackedModel,
    as_batches,
    evaluate,
    instance_seeds,
    monte_carlo,
    sigma_sweep,
)
from xbar.evaluation.montecarlo import _programmer, metric_arrays
from xbar.evaluation.streams import PROGRAM


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


class Odd(nn.Module):
    """Layer types the zoo lacks: grouped and reflect-padded convolutions, Conv1d, 3D linear input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")
        self.c2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.c3 = nn.Conv1d(6, 4, 3, stride=2)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(3, 5)
        self.out = nn.Linear(20, 10)

    def forward(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))  # [B, 6, 8, 8]
        h = self.bn(self.c3(h.flatten(2)))  # [B, 4, 31]
        h = self.fc(h[..., :3])  # linear over a 3D input
        return self.out(h.flatten(1)) + x.mean()  # a shared tensor broadcast onto the instances


def _random_stacks(sm: StackedModel, k: int, gen: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for name in sm.layers:
        base = sm.base(name)
        st = {}
        for p in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(base, p, None)
            if isinstance(t, torch.Tensor):
                s = t.detach() + 0.1 * torch.randn((k, *t.shape), generator=gen)
                st[p] = s.abs() + 0.5 if p == "running_var" else s
        sm.set(name, **st)
        out[name] = st
    return out


@pytest.mark.parametrize("strategy", ["loop", "grouped"])
@pytest.mark.parametrize("which", ["lenet", "tinybn", "odd"])
def test_stacked_forward_equals_plain_forward_per_instance(strategy, which, gen):
    model = {"lenet": lambda: lenet(), "tinybn": lambda: tiny_bn(0), "odd": lambda: Odd().eval()}[which]()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))]
    sm = StackedModel(model, layers=names, strategy=strategy)
    k = 3
    stacks = _random_stacks(sm, k, gen)
    x = torch.randn(5, 1, 8, 8, generator=gen)
    out = sm.forward(x, k)
    assert out.shape == (k, 5, 10)
    for i in range(k):
        ref = copy.deepcopy(model)
        sd = ref.state_dict()
        for name, st in stacks.items():
            for p, t in st.items():
                sd[f"{name}.{p}"] = t[i]
        ref.load_state_dict(sd)
        with torch.no_grad():
            torch.testing.assert_close(out[i], ref(x), rtol=1e-5, atol=1e-5)


def test_unstacked_layers_and_no_stacks_give_the_plain_model(gen):
    model = lenet()
    sm = StackedModel(model, layers=["classifier.4"])
    x = digits().test.tensors[0][:7]
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(sm.forward(x, 4), ref.expand(4, *ref.shape))  # nothing loaded
    w = sm.base("classifier.4").weight.detach()
    sm.set("classifier.4", weight=torch.stack([w, 2 * w]))
    out = sm.forward(x, 2)
    torch.testing.assert_close(out[0], ref)
    assert not torch.allclose(out[1], ref)


def test_stacking_rejects_unknown_and_unstackable_layers():
    with pytest.raises(ValueError, match="no such module"):
        StackedModel(lenet(), layers=["nope"])
    with pytest.raises(ValueError, match="cannot be stacked"):
        StackedModel(lenet(), layers=["features.1"])  # a ReLU


def test_instance_is_its_seeded_programming_and_a_plain_forward():
    """Instance i = the model with weights dm.program(w, seeds=[seed(i, layer)]) evaluated plainly."""
    model, split = lenet(), digits()
    r = monte_carlo(model, split, "fefet1", n=5, seed=11, batch_instances=2, progress=False)
    dm = presets.load("fefet1").device_model()
    x, y = split.test.tensors
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i in (0, 3):
        ref = copy.deepcopy(model)
        mods = dict(ref.named_modules())
        with torch.no_grad():
            for pos, name in enumerate(layers):
                w = mods[name].weight
                w.copy_(dm.program(w.detach(), 1, seeds=instance_seeds(11, [i], PROGRAM, pos))[0])
            logits = ref(x)
        assert r.per_instance["accuracy"][i] == pytest.approx((logits.argmax(1) == y).double().mean().item(), abs=1e-12)
        assert r.per_instance["loss"][i] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


@pytest.mark.parametrize("preset", ["rram-uniform", "pcm", "reram-correlated-a"])
def test_results_do_not_depend_on_batch_instances(preset):
    model, split = lenet(), digits()
    kw = dict(n=9, seed=7, progress=False, limit=150, batch_size=64)
    runs = [monte_carlo(model, split, preset, batch_instances=b, **kw) for b in (1, 7, 9)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.per_instance["accuracy"], runs[0].per_instance["accuracy"])
        np.testing.assert_array_equal(r.per_instance["loss"], runs[0].per_instance["loss"])
    assert len(set(runs[0].per_instance["loss"])) > 1  # instances differ


@requires_cuda
def test_cuda_batch_instances_change_the_arithmetic_only_by_rounding():
    """What holds on CUDA (docs/studies.md): instance i's programmed weights are bit-identical for any
    batch_instances; the default "grouped" convolution lets cuDNN pick kernels by shape (TF32 by default
    on Ampere and later), so metrics agree only to rounding: an image's argmax may flip where its top two
    logits are within rounding of each other, and the mean loss moves by about the rounding error."""
    model, split = lenet(), digits()
    dm = presets.load("rram-uniform").device_model()
    sm = StackedModel(model, device="cuda")
    load = _programmer(sm, dm, 7, False)
    load(list(range(9)))
    together = {name: layer.stacks["weight"].clone() for name, layer in sm.layers.items()}
    for i in (0, 4, 8):
        load([i])
        for name, layer in sm.layers.items():
            assert torch.equal(layer.stacks["weight"][0], together[name][i])
    kw = dict(n=9, seed=7, progress=False, batch_size=64, device="cuda")
    runs = [monte_carlo(model, split, "rram-uniform", batch_instances=b, **kw) for b in (1, 4, 9)]
    for r in runs[1:]:
        np.testing.assert_allclose(r.per_instance["accuracy"], runs[0].per_instance["accuracy"], rtol=0, atol=0.01)
        np.testing.assert_allclose(r.per_instance["loss"], runs[0].per_instance["loss"], rtol=1e-2)
    assert len(set(runs[0].per_instance["loss"])) > 1


def test_loss_only_study(tmp_path):
    model, split = lenet(), digits()
    kw = dict(n=10, seed=3, progress=False, limit=100)
    both = monte_carlo(model, split, "rram-uniform", **kw)
    r = monte_carlo(model, split, "rram-uniform", metrics=("loss",), **kw)
    loss = both.per_instance["loss"]
    np.testing.assert_array_equal(r.per_instance["loss"], loss)
    assert r.metric == "loss" and both.metric == "accuracy"
    d = json.loads(json.dumps(r.to_dict()))
    assert d["metric"] == "loss" and set(d["metrics"]) == {"loss"} and set(d["clean"]) == {"loss"}
    assert d["mean"] == pytest.approx(loss.mean()) and d["std"] == pytest.approx(loss.std(ddof=1))
    assert d["kpp"] == pytest.approx(loss.max())  # 1st percentile of 10 from the bad (high) end
    assert d["history"] == []
    assert r.plot(tmp_path / "loss.png").exists()


def test_noise_free_preset_gives_the_quantized_model_every_time():
    model, split = lenet(), digits()
    p = presets.load("rram-uniform", sigma_d=0.0)
    r = monte_carlo(model, split, p, n=4, progress=False)
    assert np.all(r.per_instance["accuracy"] == r.per_instance["accuracy"][0])
    assert r.std == 0.0


def test_layer_selection_and_noisy_bias():
    model, split = lenet(), digits()
    kw = dict(n=4, seed=1, progress=False, limit=100)
    last = monte_carlo(model, split, "rram-uniform", layers=["classifier.4"], **kw)
    assert last.layers == ["classifier.4"]
    allw = monte_carlo(model, split, "rram-uniform", **kw)
    assert len(allw.layers) == 5
    withb = monte_carlo(model, split, "rram-uniform", noisy_bias=True, **kw)
    assert not np.array_equal(withb.per_instance["loss"], allw.per_instance["loss"])


def test_model_carrying_its_preset():
    model = lenet()
    model.xbar_preset = "rram-uniform"
    r = monte_carlo(model, digits(), n=3, progress=False, limit=50)
    assert r.preset == "rram-uniform"
    with pytest.raises(ValueError, match="no preset"):
        monte_carlo(lenet(), digits(), n=3, progress=False)


def test_data_forms_agree():
    split = digits()
    x, y = split.test.tensors
    a = as_batches(split, 100)
    b = as_batches((x, y), 100)
    c = as_batches(torch.utils.data.DataLoader(split.test, batch_size=33), 100)
    for u, v, w in zip(a, b, c):
        assert torch.equal(u[0], v[0]) and torch.equal(u[0], w[0]) and torch.equal(u[1], w[1])
    assert sum(len(t[1]) for t in as_batches(split, 64, limit=70)) == 70


def test_result_json_and_plot(tmp_path):
    r = monte_carlo(lenet(), digits(), "rram-uniform", n=12, progress=False, limit=100)
    d = json.loads(json.dumps(r.to_dict()))
    for key in ("study", "preset", "n", "seed", "percentile", "confidence", "order_statistic", "kpp",
                "kpp_interval", "mean", "std", "metrics", "clean", "layers", "num_images", "per_instance"):
        assert key in d
    assert len(d["per_instance"]["accuracy"]) == 12
    path = r.plot(tmp_path / "hist.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(Exception, match="already exists"):
        r.plot(tmp_path / "hist.png")


def test_sigma_sweep_table_and_plot(tmp_path):
    models = {"a": lenet(), "b": tiny_bn(1)}
    s = sigma_sweep(models, digits(), "rram-uniform", sigmas=(0.0, 0.2, 0.4), n=8, percentile=10, limit=100, progress=False)
    assert s.kpp.shape == (2, 3)
    assert np.all(s.kpp[:, 0] >= s.kpp[:, 2])  # more device variation, lower KPP
    # a cell is the Monte Carlo study of the preset with that sigma_d, instance for instance
    cell = monte_carlo(models["a"], digits(), presets.load("rram-uniform", sigma_d=0.2), n=8, seed=0,
                       percentile=10, limit=100, progress=False)
    np.testing.assert_array_equal(s.results[("a", 0.2)].per_instance["accuracy"], cell.per_instance["accuracy"])
    assert s.kpp[0, 1] == cell.kpp() and s.mean[0, 1] == cell.mean
    assert np.ptp(s.results[("a", 0.0)].per_instance["accuracy"]) == 0  # sigma_d = 0: every instance alike
    rows = s.table()
    assert [r["sigma_d"] for r in rows] == [0.0, 0.2, 0.4] and set(rows[0]) == {"sigma_d", "a", "b"}
    assert s.plot(tmp_path / "sweep.png").exists()
    json.dumps(s.to_dict(per_instance=True))


def test_metrics_from_counts():
    raw = {"correct": torch.tensor([3, 4]), "loss_sum": torch.tensor([1.0, 2.0], dtype=torch.float64), "count": torch.tensor(4)}
    m = metric_arrays(raw, ("accuracy", "loss"))
    np.testing.assert_allclose(m["accuracy"], [0.75, 1.0])
    np.testing.assert_allclose(m["loss"], [0.25, 0.5])
    sm = StackedModel(TinyBN().eval())
    out = evaluate(sm, as_batches(digits(), 100, limit=10), 2)
    assert int(out["count"]) == 10 and out["correct"].shape == (2,)


def test_converted_model_carries_its_preset_and_tile_weights():
    import xbar

    model = lenet()
    analog = xbar.convert(model, "fefet1")
    a = monte_carlo(analog, digits(), n=3, seed=2, progress=False, limit=100)
    b = monte_carlo(model, digits(), "fefet1", n=3, seed=2, progress=False, limit=100)
    assert a.preset == "fefet1"
    np.testing.assert_array_equal(a.per_instance["loss"], b.per_instance["loss"])


def test_stored_accuracy_is_the_quantized_noise_free_model_and_bounds_a_noise_free_study():
    """``stored`` evaluates dm.target(w) per layer; with the noise switched off every instance equals it."""
    model, (x, y) = lenet(), digits().test.tensors
    preset = presets.load("rram-uniform", sigma_d=0.0)
    dm = preset.device_model()
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for m in quantized.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(dm.target(m.weight))
        want = float((quantized(x).argmax(1) == y).double().mean())
        clean = float((model(x).argmax(1) == y).double().mean())
    r = monte_carlo(model, (x, y), preset, n=3, progress=False)
    assert r.stored["accuracy"] == pytest.approx(want, abs=1e-12)
    assert r.clean["accuracy"] == pytest.approx(clean, abs=1e-12)
    assert np.all(r.values("accuracy") == r.stored["accuracy"])
    assert r.to_dict()["stored"]["accuracy"] == r.stored["accuracy"]


@pytest.mark.parametrize("analog", [False, True])
def test_training_ranks_models_by_the_study_engine(analog):
    """TRICE's in-training KPP (``xbar.training.run._mc``) is the study engine's: on a plain or a
    converted model, the same seed gives exactly the accuracies ``monte_carlo`` reports, and the
    fraction q picks Algorithm 2's order statistic ``perf[floor(q N)]``."""
    import xbar
    from xbar.training.run import _kpp, _mc

    split = digits()
    x, y = split.test.tensors
    preset = presets.load("fefet1", sigma_d=0.15)
    model = xbar.convert(lenet(), preset).eval() if analog else lenet()
    accs = _mc(model, "lenet", split, preset, 0, x, y, 40, seed=3)
    study = monte_carlo(model, (x, y), None if analog else preset, n=40, seed=3, metrics=("accuracy",),
                        progress=False, rule="trice")
    assert np.array_equal(accs.numpy(), study.values("accuracy"))
    assert np.std(study.values("accuracy")) > 0.01  # the noise matters at this sigma
    for q in (0.01, 0.05, 0.29, 0.5):
        assert _kpp(accs, q) == np.sort(accs.numpy())[int(np.floor(q * 40 + 1e-9))] == study.kpp(100 * q)
