"""xbar: crossbar emulation for noise-robust deep learning on analog NVM hardware.

Entry points: ``xbar.presets.load``, ``xbar.convert``, ``xbar.sample_weights``;
training in ``xbar.training``, studies in ``xbar.evaluation``, device fitting in
``xbar.calibration``, hardware in the loop in ``xbar.hil``.
"""

from xbar.sampling import sample_weights

__version__ = "0.1.0"


def convert(model, preset, **options):
    """Convert a PyTorch model to aihwkit analog tiles driven by ``preset`` (see xbar.tiles.convert)."""
    from xbar.tiles import convert as _convert

    return _convert(model, preset, **options)


__all__ = ["__version__", "convert", "sample_weights"]
