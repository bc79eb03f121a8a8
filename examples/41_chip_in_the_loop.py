#!/usr/bin/env python
"""Import -> fit -> train -> program -> fine-tune -> replay: the chip in the loop, on bundled data, in a few minutes on 2 cores.

1. Import an ArC TWO data store (ArC2Control's HDF5) into an ``xbar-measurements`` file
   (``xbar.calibration.import_arc2``, with the plan that names each crosspoint's target level).
2. Fit a device preset from it (``xbar.calibration.fit``).
3. Train WVAT's MLP on scikit-learn's 8x8 digits with noise injection from that preset.
4. Program it onto an emulated chip that has aged since it was measured (three times
   the fitted programming noise), recording the session; fit the recording and compare
   the chip with the preset the network was trained for, per level (the signal to retrain).
   The same driver protocol runs the ArC TWO backend: here on the software stand-in of
   ``pyarc2`` (no instrument), with pulse-and-verify.
5. Chip-in-the-loop progressive fine-tuning (NeuRRAM Fig. 4d) on that chip, recorded:
   accuracy after each programmed layer with and without fine-tuning.
6. Replay the fine-tuning session from its recording: the same result, bit for bit, without the chip.

Usage: ``python examples/41_chip_in_the_loop.py [--epochs N] [--seed S] [--out DIR]`` from any directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from xbar import hil
from xbar.calibration import import_arc2
from xbar.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "calibration" / "examples"
ARC2_SESSION, ARC2_PLAN = EXAMPLES / "arc2_session.h5", EXAMPLES / "arc2_plan.csv"
AGED = 3.0  # the chip's programming noise over the fitted one


def measurements(out: Path) -> Path:
    """The bundled ArC TWO store imported into ``out``."""
    path = import_arc2(ARC2_SESSION, out / "arc2_measurements.h5", plan=ARC2_PLAN, force=True)
    print(f"   {ARC2_SESSION.name} + {ARC2_PLAN.name} -> {path.name}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=4, help="fine-tuning epochs after each layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        try:
            return run(args, out, start)
        except InputError as exc:
            print(f"41_chip_in_the_loop: error: {exc}", file=sys.stderr)
            return 2


def run(args, out: Path, start: float) -> int:
    from xbar import data
    from xbar.calibration import fit
    from xbar.calibration.result import format_table
    from xbar.cli.cmd_hil import comparison_text
    from xbar.cli.tables import format_table as table
    from xbar.training import train

    print("1. importing the instrument's data store")
    meas = measurements(out)

    print("2. fitting a preset")
    result = fit(meas, name="fitted-chip")
    print(format_table(result.summary_rows()[:8]))
    preset = result.preset

    print(f"3. training mlp on digits for {args.epochs} epochs with noise injection from {preset.name}")
    model, _ = train("mlp", "digits", preset, "noise", epochs=args.epochs, seed=args.seed, lr=0.05, progress=False)
    model.eval()
    split = data.load("digits", seed=args.seed)

    print(f"4. programming a chip {AGED:g}x noisier than measured (recorded), and fitting the recording")
    chip_preset = preset.with_overrides(**{"programming.scale": AGED})
    chip = hil.EmulatedBackend(chip_preset, rows=64, cols=64, seed=args.seed)
    with hil.RecordingBackend(chip, out / "program.h5", force=True) as rec:
        session = hil.program_model(model, rec, preset)
        acc = hil.evaluate(hil.read_model(session, model), split.test).accuracy
        hil.read_model(session, model)  # a second read of every tile: read noise for the fit
    print(f"   accuracy on the chip {acc:.4f} ({session.summary()['tiles']} tiles)")
    print("   " + comparison_text(hil.compare_with_preset(rec.path, preset)).replace("\n", "\n   "))

    from xbar.hil.arc2_standin import StandInPyarc2

    g_uS = (10.0, 40.0, 70.0, 100.0)
    firmware = out / "arc2-standin.bin"
    firmware.write_bytes(b"")
    arc2 = hil.Arc2Backend(preset, g_uS, firmware=firmware, pulse=hil.PulseVerify(tolerance=0.2),
                           library=StandInPyarc2(preset, g_uS, seed=args.seed))
    arc2.program(0, (torch.arange(32 * 32) % 4).reshape(32, 32).float())
    r = arc2.reports[0]
    print(f"   ArC TWO backend on the pyarc2 stand-in: 32x32 pattern, {r.pulses_mean:.1f} pulses/device "
          f"(max {r.pulses_max}), {r.unconverged} unconverged, verify error rms {r.error_rms:.3f} levels")

    print(f"5. progressive fine-tuning on the chip ({args.finetune_epochs} epochs after each layer), recorded")
    cfg = hil.FinetuneConfig(epochs=args.finetune_epochs)
    chip = hil.EmulatedBackend(chip_preset, rows=64, cols=64, seed=args.seed + 1)
    with hil.RecordingBackend(chip, out / "finetune.h5", force=True) as rec:
        live = hil.finetune(model, rec, preset, split, cfg, seed=args.seed)
    print(table(live.table(), ["layers on chip", "layer", "without fine-tuning", "programmed", "with fine-tuning"]))
    print(f"   all layers on the chip: {100 * live.final_with:.2f}% with fine-tuning, {100 * live.final_without:.2f}% "
          f"without; the stored weights (no device noise) reach {100 * live.stored:.2f}%")
    live.plot(out / "finetune.png", force=True)

    print("6. replaying the fine-tuning session")
    again = hil.finetune(model, hil.ReplayBackend(rec.path), preset, split, cfg, seed=args.seed)
    same = again.rows == live.rows and all(
        torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), live.model.state_dict().values())
    )
    print(f"   replay: final accuracy {100 * again.final_with:.2f}%, identical to the session: {same}")
    print(f"done in {time.time() - start:.0f} s" + (f"; files in {out}" if args.out else ""))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
