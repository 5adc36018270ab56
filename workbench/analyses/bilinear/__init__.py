"""Bilinear MLPs (Pearce et al. 2024): layers, offline training, interaction-matrix eigendecomposition,
and bilinear replacements of the MLPs (gated or plain) of pretrained models.

``layers``: the bilinear modules; ``training``: the three trainings (digits, toy, character LM);
``interaction`` / ``spectrum``: interaction matrices and their eigendecomposition; ``replacement``: fitting
one to a pretrained MLP; ``api``: the public functions.
"""

from . import interaction, replacement, spectrum, training
from .api import bilinear_replacement, bilinear_spectrum, train_bilinear_lm, train_digits, train_toy
from .layers import BilinearClassifier, BilinearLM, BilinearMLP, BilinearWeights
from .spectrum import BilinearSpectrumResult, SpectrumConfig
from .training import DigitsConfig, LMConfig, ToyConfig, TrainedBilinear

ANALYSES = (spectrum.ANALYSIS, replacement.ANALYSIS, *training.ANALYSES)

__all__ = [
    "ANALYSES",
    "BilinearClassifier", "BilinearLM", "BilinearMLP", "BilinearSpectrumResult", "BilinearWeights", "DigitsConfig",
    "LMConfig", "SpectrumConfig", "ToyConfig", "TrainedBilinear", "bilinear_replacement", "bilinear_spectrum",
    "interaction", "train_bilinear_lm", "train_digits", "train_toy",
]
