"""Bilinear MLPs (Pearce et al. 2024): layers, offline training, interaction-matrix eigendecomposition,
and bilinear replacements of the MLPs (gated or plain) of pretrained models.

``layers``: the bilinear modules; ``training``: the three trainings (digits, toy, character LM);
``interaction`` / ``spectrum``: interaction matrices and their eigendecomposition; ``replacement``: fitting
one to a pretrained MLP; ``api``: the public functions (what ``workbench`` exports: ``api.__all__``).
"""

from . import api, interaction, replacement, spectrum, training
from .layers import BilinearClassifier, BilinearLM, BilinearMLP, BilinearWeights
from .spectrum import BilinearSpectrumResult, SpectrumConfig
from .training import DigitsConfig, LMConfig, ToyConfig, TrainedBilinear

ANALYSES = (spectrum.ANALYSIS, replacement.ANALYSIS, *training.ANALYSES)

__all__ = [
    "ANALYSES",
    "BilinearClassifier", "BilinearLM", "BilinearMLP", "BilinearSpectrumResult", "BilinearWeights", "DigitsConfig",
    "LMConfig", "SpectrumConfig", "ToyConfig", "TrainedBilinear", "api", "interaction",
]
