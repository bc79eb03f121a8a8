"""``xbar eval``, ``drift``, ``bitflip``, ``landscape``: JSON keys, outputs, bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import cli_json, cli_refused, lenet, one_thread, write_run
from xbar.cli import main


def _bad(capsys, argv, *words) -> str:
    return cli_refused(capsys, argv, *words, usage_ok=True)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {f"r{s}": write_run(root / f"run{s}", lenet(seed=s), seed=0) for s in (0, 1, 2)}
    plain = root / "plain.pt"
    torch.save(lenet().state_dict(), plain)
    out["plain"] = plain
    return out




FAST = ["--limit", "80", "--no-progress"]
JSON_DOCS = (Path(__file__).resolve().parents[1] / "docs" / "studies.md").read_text().split("### JSON keys")[1]


def _documented(*key_sets) -> None:
    """Every key is named (in backticks) in the JSON keys section of docs/studies.md."""
    missing = sorted({k for keys in key_sets for k in keys if f"`{k}`" not in JSON_DOCS})
    assert not missing, f"undocumented --json keys: {missing}"


def test_eval_json_keys_out_and_plot(runs, capsys, tmp_path):
    out, plot = tmp_path / "res.json", tmp_path / "hist.png"
    d = cli_json(capsys, ["eval", str(runs["r0"]), "--mc", "12", "--percentile", "5", "--json", "--out", str(out),
                       "--plot", str(plot), *FAST])
    for key in ("study", "preset", "n", "seed", "percentile", "confidence", "order_statistic", "rule", "kpp",
                "kpp_interval", "mean", "std", "metrics", "clean", "per_instance", "checkpoint", "model", "data",
                "split", "num_images", "history"):
        assert key in d, key
    assert d["preset"] == "rram-uniform" and d["n"] == 12 and d["num_images"] == 80
    _documented(d, d["metrics"], d["metrics"]["accuracy"], d["per_instance"], d["history"][0] if d["history"] else {})
    assert json.loads(out.read_text())["kpp"] == d["kpp"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # no overwrite without --force, checked before any work
    _bad(capsys, ["eval", str(runs["r0"]), "--mc", "2", "--out", str(out), *FAST], "already exists", "--force")
    cli_json(capsys, ["eval", str(runs["r0"]), "--mc", "2", "--json", "--out", str(out), "--force", *FAST])


def test_eval_plain_state_dict_and_text(runs, capsys):
    rc = main(["eval", str(runs["plain"]), "--model", "lenet", "--data", "digits", "--preset", "fefet1",
               "--mc", "4", *FAST])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "1th percentile" in cap.out or "1st" in cap.out or "percentile" in cap.out
    assert "fefet1" in cap.out


def test_eval_adaptive(runs, capsys):
    d = cli_json(capsys, ["eval", str(runs["r0"]), "--mc", "8", "--percentile", "50", "--tolerance", "0.5",
                       "--json", *FAST])
    assert d["n"] == 8 and d["history"][0]["interval_width"] < 0.5


def test_eval_sigma_sweep(runs, capsys, tmp_path):
    d = cli_json(capsys, ["eval", str(runs["r0"]), "--sigmas", "0,0.2,0.4", "--compare", str(runs["r1"]), "--mc", "4",
                       "--json", "--plot", str(tmp_path / "sweep.png"), *FAST])
    for key in ("study", "preset", "parameter", "percentile", "models", "sigmas", "kpp", "kpp_lower", "kpp_upper",
                "mean", "std", "table", "per_instance"):
        assert key in d, key
    assert d["study"] == "sigma_sweep" and d["sigmas"] == [0.0, 0.2, 0.4]
    _documented(d)
    assert d["models"] == [str(runs["r0"]), str(runs["r1"])] and len(d["kpp"]) == 2
    assert (tmp_path / "sweep.png").exists()
    _bad(capsys, ["eval", str(runs["r0"]), "--compare", str(runs["r1"])], "--sigmas")
    _bad(capsys, ["eval", str(runs["r0"]), "--sigma-field", "nope", "--sigmas", "0.1", "--mc", "2", *FAST], "nope")


def test_drift_json(runs, capsys, tmp_path):
    d = cli_json(capsys, ["drift", str(runs["r0"]), "--preset", "pcm", "--times", "1s,1d,1y", "--mc", "3", "--json",
                       "--plot", str(tmp_path / "d.png"), *FAST])
    for key in ("study", "times_s", "compensation", "table", "per_instance", "clean", "has_drift", "read_noise"):
        assert key in d, key
    assert d["times_s"] == [1.0, 86400.0, 31536000.0] and d["compensation"] == [True, False]
    assert len(d["table"]) == 6
    _documented(d, d["table"][0], d["per_instance"])
    d = cli_json(capsys, ["drift", str(runs["r0"]), "--preset", "pcm", "--times", "3600", "--mc", "2",
                       "--no-compensation", "--json", *FAST])
    assert d["compensation"] == [False]


def test_bitflip_json_and_tables(runs, capsys, tmp_path):
    d = cli_json(capsys, ["bitflip", str(runs["r0"]), "--dtype", "float32,int8", "--p-min", "1e-5", "--p-max", "1e-1", "--points-per-decade", "1",
                       "--repeats", "2", "--targets", "weights,activations", "--json", "--plot",
                       str(tmp_path / "b.png"), *FAST])
    for key in ("study", "targets", "p", "repeats", "table", "sweeps", "reference"):
        assert key in d, key
    assert set(d["sweeps"]) == {"float32", "int8"} and d["reference"] == "float32"
    sw = d["sweeps"]["float32"]
    for key in ("accuracy", "flips", "slots", "observed_rate", "fit", "baseline", "mask_bits"):
        assert key in sw, key
    assert len(sw["accuracy"]) == 5 and len(sw["accuracy"][0]) == 2
    assert {"label", "midpoint_p", "p_99_percent_of_peak", "converged"} <= set(d["table"][0])
    _documented(d, *d["table"], sw, sw["fit"], sw["table"][0], sw["baseline"])
    d = cli_json(capsys, ["bitflip", str(runs["r0"]), "--mask", "msb:1", "--mask", "msb:9", "--p-min", "1e-3",
                       "--repeats", "1", "--json", *FAST])
    assert set(d["sweeps"]) == {"msb:1", "msb:9"}
    assert d["sweeps"]["msb:9"]["mask_bits"] == list(range(23))


def test_bitflip_directional(runs, capsys):
    """--p10-ratio 0: only 0 -> 1 flips; the table gives both probabilities, not the symmetric expectation."""
    d = cli_json(capsys, ["bitflip", str(runs["r0"]), "--p-min", "1e-3", "--p-max", "1e-2", "--points-per-decade", "1",
                       "--repeats", "1", "--targets", "weights", "--p10-ratio", "0", "--json", *FAST])
    assert d["p10_ratio"] == 0.0
    row = d["sweeps"]["float32"]["table"][1]
    assert row["p_0to1"] == 1e-2 and row["p_1to0"] == 0.0 and row["expected_flips_weights"] is None
    _documented(d, d["sweeps"]["float32"], row)
    assert main(["bitflip", str(runs["r0"]), "--p-min", "1e-3", "--p-max", "1e-2", "--repeats", "1",
                 "--targets", "weights", "--p10-ratio", "inf", *FAST]) == 0
    out = capsys.readouterr().out
    assert "p(1->0) / p(0->1) = inf" in out and "p_0to1" in out


def test_landscape_1d_and_2d(runs, capsys, tmp_path):
    d = cli_json(capsys, ["landscape", str(runs["r0"]), "--dims", "1", "--directions", "2", "--alphas=-1:1:3",
                       "--json", *FAST])
    assert d["dims"] == 1 and d["alphas"] == [-1.0, 0.0, 1.0] and len(d["loss"]) == 2
    assert d["split"] == "train"
    _documented(d)
    d = cli_json(capsys, ["landscape", str(runs["r0"]), "--dims", "2", "--models", f"{runs['r1']},{runs['r2']}",
                       "--alphas", "0:1:3", "--betas", "0,0.5", "--json", "--plot", str(tmp_path / "l2.png"), *FAST])
    assert d["dims"] == 2 and len(d["loss"]) == 3 and len(d["loss"][0]) == 2
    assert d["models"] == [str(runs["r0"]), str(runs["r1"]), str(runs["r2"])]
    _documented(d)


def test_bad_inputs_exit_2_with_one_line(runs, capsys, tmp_path):
    r0 = str(runs["r0"])
    _bad(capsys, ["eval", str(tmp_path / "nope")], "no such")
    _bad(capsys, ["eval", str(runs["plain"])], "--model")
    _bad(capsys, ["eval", str(runs["plain"]), "--model", "lenet", "--data", "cifar10"], "shape")
    _bad(capsys, ["eval", r0, "--preset", "no-such-preset"], "no-such-preset")
    _bad(capsys, ["eval", r0, "--plot", str(tmp_path / "x.jpg")], ".png")
    _bad(capsys, ["eval", r0, "--mc", "0"])
    _bad(capsys, ["eval", r0, "--percentile", "100"])
    _bad(capsys, ["eval", r0, "--layers", "nope", "--mc", "2", *FAST], "nope")
    _bad(capsys, ["eval", r0, "--device", "tpu"], "--device")
    _bad(capsys, ["drift", r0, "--times", "1,abc"], "--times")
    _bad(capsys, ["drift", r0, "--times", "5,5"], "twice")
    _bad(capsys, ["bitflip", r0, "--dtype", "float8"], "--dtype")
    _bad(capsys, ["bitflip", r0, "--mask", "99-100"], "--mask")
    _bad(capsys, ["bitflip", r0, "--targets", "gradients"], "--targets")
    _bad(capsys, ["bitflip", r0, "--p-min", "1e-1", "--p-max", "1e-3"], "p-min")
    _bad(capsys, ["bitflip", r0, "--p10-ratio", "-1"], "--p10-ratio")
    _bad(capsys, ["landscape", r0, "--dims", "2"], "--models")
    _bad(capsys, ["landscape", r0, "--alphas", "a:b"], "--alphas")
    _bad(capsys, ["landscape", r0, "--alphas=-1:1:100000000"], "--alphas", "at most")
    _bad(capsys, ["eval", r0, "--out", str(tmp_path / "same.png"), "--plot", str(tmp_path / "same.png")], "two different files")
    # a pickle with code is refused, never executed
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Path("x")}, evil)
    _bad(capsys, ["eval", str(evil), "--model", "lenet"], "refusing to unpickle")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    _bad(capsys, ["eval", str(garbage), "--model", "lenet"], "not a PyTorch file")
    garbage.write_bytes(b"junk\n")  # read as torch's legacy format: a KeyError inside torch.load
    _bad(capsys, ["eval", str(garbage), "--model", "lenet"], "not a PyTorch file")
    nan = tmp_path / "nan.pt"
    torch.save({k: torch.full_like(v, float("nan")) for k, v in lenet().state_dict().items()}, nan)
    _bad(capsys, ["eval", str(nan), "--model", "lenet", "--data", "digits"], "NaN or infinite")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    _bad(capsys, ["eval", str(broken)], "manifest.json", "JSON")
    (broken / "manifest.json").write_text(json.dumps({"model": "lenet"}))
    _bad(capsys, ["eval", str(broken)], "data", "missing")


def test_options_that_do_not_apply_are_refused(runs, capsys):
    r0 = str(runs["r0"])
    _bad(capsys, ["bitflip", r0, "--layers", "nosuch", *FAST], "--layers", "--targets")
    _bad(capsys, ["bitflip", r0, "--targets", "weights", "--sites", "nosuch", *FAST], "--sites")
    _bad(capsys, ["bitflip", r0, "--dtype", "float32,int8", "--reference", "nope", *FAST], "--reference")
    _bad(capsys, ["eval", r0, "--sigma-field", "threshold", *FAST], "--sigmas")
    _bad(capsys, ["eval", r0, "--sigmas", "0.1", "--sigma-field", "nosuch", *FAST], "--sigma-field")
    _bad(capsys, ["eval", r0, "--sigmas", "nan", *FAST], "--sigmas")
    _bad(capsys, ["eval", r0, "--layers", ",", *FAST], "--layers")


def test_an_invalid_recorded_preset_is_an_error_not_a_fallback(runs, capsys, tmp_path):
    run = write_run(tmp_path / "run", lenet())
    man = json.loads((run / "manifest.json").read_text())
    man["preset_spec"] = {"schema": "xbar-preset", "schema_version": 1, "name": "rram-uniform",
                          "mapping": {"weight_bits": 3, "bits_per_device": 2}}  # H not a multiple of B
    (run / "manifest.json").write_text(json.dumps(man))
    _bad(capsys, ["eval", str(run), "--mc", "2", *FAST], "preset_spec", "--preset")
