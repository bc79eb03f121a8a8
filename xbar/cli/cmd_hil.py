"""``xbar hil program|eval|finetune``: a trained network on a chip (emulated, replayed or ArC TWO)."""

from __future__ import annotations

import argparse

from xbar.cli import _studies as S
from xbar.cli.common import add_preset_overrides, add_study_args, positive_float, positive_int
from xbar.cli.tables import format_table
from xbar.errors import InputError

BACKENDS = "emulated[:PRESET], replay:FILE or arc2[:PORT]"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hil",
        help="hardware in the loop: program a trained network onto a chip, evaluate it, fine-tune it on the chip",
        description="Program a trained network onto a crossbar chip through a backend (an emulated chip, a replayed "
        "recording or an ArC TWO instrument), read it back and evaluate it; --record writes every chip call to a "
        "measurement file that replays the session (--backend replay:FILE) and fits the chip (--fit-report).",
    )
    hs = p.add_subparsers(dest="hil_command", metavar="SUBCOMMAND")
    specs = {
        "program": "program the network, read it back, report write-verify statistics, weight errors and accuracy",
        "eval": "program the network and evaluate it at the times of --times (drift on the chip's clock)",
        "finetune": "chip-in-the-loop progressive fine-tuning (NeuRRAM Fig. 4d): program layer by layer, "
        "fine-tune the rest on what the chip holds; accuracy after each layer with and without fine-tuning",
    }
    for name, text in specs.items():
        q = hs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _common(q)
        if name == "eval":
            q.add_argument("--times", default="0", help="comma-separated seconds after programming to evaluate at (default 0)")
        if name == "finetune":
            q.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after each layer (default 2; 0: none)")
            q.add_argument("--lr", type=positive_float, default=0.02, help="SGD learning rate of the fine-tuning (default 0.02)")
            q.add_argument("--train-batch-size", type=positive_int, default=64, help="fine-tuning batch size (default 64)")
            q.add_argument("--no-noise", action="store_true", help="fine-tune without injecting the preset's device noise")
            q.add_argument("--no-baseline", action="store_true",
                           help="skip the comparison without fine-tuning (it programs the network a second time)")
        q.set_defaults(func=run, hil=name)
    p.set_defaults(func=lambda args: _no_subcommand(p))


def _no_subcommand(p: argparse.ArgumentParser) -> int:
    raise InputError("expected a subcommand: program, eval or finetune (see xbar hil --help)")


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("checkpoint", metavar="CHECKPOINT", help="xbar train run directory, or a state-dict file with --model")
    q.add_argument("--backend", default="emulated", help=f"the chip: {BACKENDS} (default: emulated, the network's preset)")
    q.add_argument("--preset", help="the preset the network was trained for (default: the run's); sets the mapping")
    add_preset_overrides(q)
    q.add_argument("--record", metavar="FILE.h5", help="record every chip call into this measurement file")
    q.add_argument("--fit-report", action="store_true",
                   help="fit the recording (--record, or the replayed file) and compare the chip with the preset per level")
    q.add_argument("--model", help="model name (needed for a plain state-dict file)")
    q.add_argument("--data", help="data set name (default: the run's)")
    q.add_argument("--data-root", help="directory of the MNIST/CIFAR files (default $XBAR_DATA or ./data)")
    q.add_argument("--split", choices=("test", "train"), default="test", help="which part of the data set to evaluate (default test)")
    q.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    q.add_argument("--act-bits", type=int, help="quantize ReLU outputs to this many bits (default: the run's)")
    q.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default 256)")
    g = q.add_argument_group("emulated chip")
    g.add_argument("--tolerance", type=positive_float, help="write-verify tolerance in level units (emulated: default none, one pulse; arc2: 0.25)")
    g.add_argument("--max-pulses", type=positive_int, help="write-verify pulse budget per device (default 20 emulated, 50 arc2)")
    g.add_argument("--tile-rows", type=positive_int, help="tile rows (default: the preset's; arc2: the whole array)")
    g.add_argument("--tile-cols", type=positive_int, help="tile columns (default: the preset's; arc2: the whole array)")
    g.add_argument("--level-conductance", help="comma-separated nominal conductance of each level, uS (required for arc2)")
    a = q.add_argument_group("ArC TWO")
    a.add_argument("--firmware", help="path of the ArC TWO firmware file")
    a.add_argument("--read-voltage", type=float, default=0.2, help="read-out voltage, V (default 0.2)")
    q.add_argument("--plot", metavar="PATH", help="write a plot (.png, .pdf or .svg)")
    q.add_argument("--out", metavar="RESULT.json", help="write the JSON result to this file (atomically)")
    q.add_argument("--force", action="store_true", help="overwrite --out, --plot and --record files that exist")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_study_args(q)


def run(args: argparse.Namespace) -> int:
    import torch

    from xbar import hil

    S.check_outputs(args)
    if args.fit_report and not args.record and not args.backend.startswith("replay:"):
        raise InputError("--fit-report fits the recording: give --record FILE.h5 (or --backend replay:FILE)")
    torch.manual_seed(args.seed)
    model, info = S.load_checkpoint(args)
    model.eval()
    split = S.load_split(args, info)
    test = split.train if args.split == "train" else split.test
    if args.limit:
        test = torch.utils.data.Subset(test, range(min(args.limit, len(test))))
    preset = S.resolve_preset(args, info)
    backend, replay_file = _backend(args, preset)
    recorder = hil.RecordingBackend(backend, args.record, force=args.force) if args.record else None
    chip = recorder or backend
    try:
        with S.library_errors():
            if args.hil == "finetune":
                result, text, plot = _finetune(args, model, chip, preset, split.train, test)
            else:
                result, text, plot = _program(args, model, chip, preset, test)
    finally:
        if recorder is not None:
            recorder.close()
        close = getattr(backend, "close", None)
        if callable(close) and not isinstance(backend, hil.RecordingBackend):
            close()
    result.update(checkpoint=args.checkpoint, model=info["model"], data=info["data"], backend=chip.name,
                  preset=getattr(preset, "name", str(preset)), seed=args.seed)
    lines = [text]
    if recorder is not None:
        result["record"] = str(recorder.path)
        lines.append(f"recorded {recorder.path}")
    if args.fit_report:
        cmp = hil.compare_with_preset(recorder.path if recorder is not None else replay_file, preset)
        result["chip_vs_preset"] = cmp.to_dict()
        lines.append(comparison_text(cmp))
    return S.finish(args, result, "\n".join(lines), plot=plot)


def comparison_text(cmp) -> str:
    """A :class:`~xbar.hil.ChipComparison` as a table of levels and its verdict."""
    rows = [{**r, "interval": f"[{r['low']:.3g}, {r['high']:.3g}]", "": "*" if r["outside"] else ""}
            for r in cmp.rows]
    head = f"chip as measured vs trained-for preset (level units, {100 * cmp.confidence:g}% intervals):"
    return "\n".join([head, format_table(rows, ["quantity", "level", "trained", "measured", "interval", ""]),
                      cmp.verdict])


def _backend(args: argparse.Namespace, preset):
    """The backend named by --backend, and the replayed file (or None)."""
    from xbar import hil, presets

    kind, _, rest = args.backend.partition(":")
    g = _conductances(args)
    if kind == "emulated":
        chip_preset = presets.resolve(rest) if rest else preset
        have, want = chip_preset.mapping.levels, preset.mapping.levels
        if have != want:
            raise InputError(
                f"--backend {args.backend}: the chip stores {have or 'analog'} levels per device, the network's preset "
                f"{getattr(preset, 'name', preset)} maps weights to {want or 'analog conductances'}; expected the same levels"
            )
        return hil.EmulatedBackend(
            chip_preset, rows=args.tile_rows, cols=args.tile_cols, seed=args.seed, tolerance=args.tolerance,
            max_pulses=args.max_pulses or 20, level_conductance_uS=g,
        ), None
    if kind == "replay" and rest:
        return hil.ReplayBackend(rest), rest
    if kind == "arc2":
        port = None
        if rest:
            try:
                port = int(rest)
            except ValueError:
                raise InputError(f"--backend {args.backend}: port {rest!r}: expected an integer instrument id") from None
        if g is None:
            raise InputError("--backend arc2: --level-conductance is required (the nominal conductance of each level, uS)")
        pulse = hil.PulseVerify(read_voltage=args.read_voltage, tolerance=args.tolerance or 0.25, max_pulses=args.max_pulses or 50)
        return hil.Arc2Backend(preset, g, port=port, firmware=args.firmware, pulse=pulse,
                               tile_rows=args.tile_rows, tile_cols=args.tile_cols), None
    raise InputError(f"--backend {args.backend!r}: expected {BACKENDS}")


def _conductances(args: argparse.Namespace):
    if not args.level_conductance:
        return None
    return S.parse_list(args.level_conductance, float, "--level-conductance")


def _program(args, model, chip, preset, test):
    """program and eval: program, read back at each time, evaluate."""
    from xbar import hil
    from xbar.presets import device_model_of

    times = [0.0]
    if args.hil == "eval":
        times = S.parse_list(args.times, float, "--times")
        if not times or any(not t >= 0 for t in times) or times != sorted(times):
            raise InputError(f"--times {args.times!r}: expected increasing seconds >= 0")
    session = hil.program_model(model, chip, preset)
    dm = device_model_of(preset)
    rows, start = [], chip.time_s
    for t in times:
        wait = t - (chip.time_s - start)  # an instrument's clock runs on its own; an emulated one only here
        if wait > 0:
            chip.advance(wait)
        on_chip = hil.read_model(session, model)
        acc = hil.evaluate(on_chip, test, batch_size=args.batch_size).accuracy
        rows.append({"time_s": t, "accuracy": acc})
    weights = dict(hil.weight_parameters(on_chip))
    layers = []
    for name, w in hil.weight_parameters(model):
        stored = dm.target(w.detach())
        err = weights[name].detach() - stored
        layers.append({"layer": name, "shape": list(w.shape), "weight_error_rms": float(err.pow(2).mean().sqrt()),
                       "relative_error": float(err.norm() / stored.norm().clamp(min=1e-30))})
    stored_model = hil.stored_copy(model, dm)
    s = session.summary()
    result = {
        "command": args.hil,
        "summary": s,
        "stored_accuracy": hil.evaluate(stored_model, test, batch_size=args.batch_size).accuracy,
        "accuracy": rows[0]["accuracy"] if args.hil == "program" else None,
        "times": rows if args.hil == "eval" else None,
        "layers": layers,
    }
    result = {k: v for k, v in result.items() if v is not None}
    text = [f"xbar hil {args.hil}: {s['layers']} layers on {s['tiles']} tiles ({s['devices']} devices) of {chip.name}"]
    wv = s.get("write_verify")
    if wv:
        text.append(f"write-verify: {wv['pulses_mean']:.2f} pulses/device (max {wv['pulses_max']}), "
                    f"{wv['unconverged']} unconverged, error rms {wv['error_rms']:.3f} levels")
    text.append(format_table(layers, ["layer", "weight_error_rms", "relative_error"]))
    text.append(f"stored accuracy {result['stored_accuracy']:.4f} (quantized weights, no device noise)")
    text.append(format_table(rows, ["time_s", "accuracy"]))

    def plot(path, force):
        from xbar.evaluation.plots import _figure, _save

        fig, ax = _figure()
        if args.hil == "eval" and len(rows) > 1:
            ax.plot([max(r["time_s"], 1e-3) for r in rows], [100 * r["accuracy"] for r in rows], "o-")
            ax.set_xscale("log")
            ax.set_xlabel("time after programming (s)")
            ax.set_ylabel("accuracy (%)")
        else:
            ax.bar(range(len(layers)), [r["relative_error"] for r in layers])
            ax.set_xticks(range(len(layers)), [r["layer"] for r in layers], rotation=45, ha="right")
            ax.set_ylabel("read-back weight error / stored weight norm")
        ax.set_title(f"{chip.name}")
        return _save(fig, path, force)

    return result, "\n".join(text), plot



def _finetune(args, model, chip, preset, train, test):
    """Fine-tune on the run's training part (split and normalized as the run recorded it)."""
    from dataclasses import asdict

    from xbar import hil

    if args.epochs < 0:
        raise InputError(f"--epochs {args.epochs}: expected >= 0")
    cfg = hil.FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.train_batch_size,
                             noise=not args.no_noise, baseline=not args.no_baseline)
    r = hil.finetune(model, chip, preset, (train, test), cfg, seed=args.seed, progress=not args.no_progress)
    result = {"command": "finetune", **r.to_dict(), "config": asdict(cfg)}
    rec = r.recovered
    text = "\n".join([
        f"xbar hil finetune: {len(r.rows)} layers onto {chip.name} (seed {args.seed}); accuracy in %:",
        format_table(r.table(), ["layers on chip", "layer", "without fine-tuning", "programmed", "with fine-tuning"]),
        f"software {100 * r.software:.2f}, stored {100 * r.stored:.2f}"
        + (f"; fine-tuning recovered {100 * rec:.0f}% of the accuracy lost to programming" if rec is not None else ""),
    ])
    return result, text, lambda path, force: r.plot(path, force=force)
