"""The physics of one device population: programming noise, correlated noise,
injection families, read noise, drift and bit flips, composed by :class:`DeviceModel`."""

from xbar.devices.bitflip import BitFlipModel, flip_bits
from xbar.devices.correlated import (
    DenseCovariance,
    KroneckerCovariance,
    KroneckerLowRank,
    LowRankCovariance,
    exponential_kernel,
)
from xbar.devices.drift import DriftModel, ReadNoise
from xbar.devices.families import FAMILIES, NoiseFamily
from xbar.devices.measured import MeasuredCovariance
from xbar.devices.model import DeviceModel, DeviceState
from xbar.devices.programming import ProgrammingNoise, fefet_profile
from xbar.devices.seeding import generators as instance_generators
from xbar.devices.variation import RangeVariation

__all__ = [
    "BitFlipModel",
    "flip_bits",
    "FAMILIES",
    "DenseCovariance",
    "DeviceModel",
    "DeviceState",
    "DriftModel",
    "KroneckerCovariance",
    "KroneckerLowRank",
    "LowRankCovariance",
    "MeasuredCovariance",
    "NoiseFamily",
    "ProgrammingNoise",
    "RangeVariation",
    "ReadNoise",
    "exponential_kernel",
    "fefet_profile",
    "instance_generators",
]
