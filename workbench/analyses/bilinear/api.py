"""The public functions (``__all__``: what ``workbench`` exports, ``wb.train_digits``, ``wb.bilinear_spectrum``, ...).

Each is ``f(model, *, config=None, cache=True, **options)`` (the training functions have no model: they train one);
``options`` replace fields of the config, whose ``prepare`` hook fills what is derived from them.
"""

from __future__ import annotations

from ...engine.runner import run_analysis
from . import replacement, spectrum, training
from .layers import BilinearMLP
from .replacement import BilinearReplacementResult, ReplacementConfig
from .spectrum import BilinearSpectrumResult, SpectrumConfig, check_bilinear
from .training import (DigitsConfig, LMConfig, TextSource, ToyConfig, TrainedBilinear, TrainingSource,
                       digits_data_id)

__all__ = ["BilinearMLP", "bilinear_replacement", "bilinear_spectrum", "train_bilinear_lm", "train_digits", "train_toy"]


def train_digits(*, config: DigitsConfig | None = None, cache=True, **options) -> TrainedBilinear:
    """Train (or fetch from the cache) a one-layer bilinear classifier on scikit-learn's 8x8 digits.

    Options: see :class:`DigitsConfig` (d_hidden, input_noise, weight_decay, epochs, seed, ...).
    ``.model()`` on the result gives the :class:`BilinearClassifier`; pass either to :func:`bilinear_spectrum`.
    """
    source = TrainingSource("digits", digits_data_id())
    return run_analysis(training.DIGITS, source, config, cache=cache, **options)


def train_toy(*, config: ToyConfig | None = None, cache=True, **options) -> TrainedBilinear:
    """Train (or fetch) a bilinear layer on planted quadratic forms; the planted eigenpairs are in its tensors."""
    source = TrainingSource("toy", "planted-quadratic-forms/1")
    return run_analysis(training.TOY, source, config, cache=cache, **options)


def train_bilinear_lm(*, text: str | None = None, config: LMConfig | None = None, cache=True,
                      **options) -> TrainedBilinear:
    """Train (or fetch) a small bilinear transformer on the characters of ``text`` (default: the shipped eval corpus)."""
    from ...corpus import eval_text

    source = TextSource(eval_text() if text is None else text)
    return run_analysis(training.LM, source, config, cache=cache, **options)


def bilinear_spectrum(model, *, config: SpectrumConfig | None = None, cache=True, **options) -> BilinearSpectrumResult:
    """Eigendecompose the interaction matrices of a bilinear layer, one per output direction.

    ``model``: a :class:`BilinearClassifier`, :class:`BilinearMLP`, :class:`BilinearLM` (``layer=``) or a
    trained result. ``directions=``: 'outputs', 'svd', 'tokens' (with ``tokens=``), or a tensor / nested
    sequence [k, d_out] of output-space vectors (e.g. a direction from another analysis). A pretrained LM
    (SwiGLU / GELU MLPs) raises :class:`~workbench.UnsupportedModelError`: use :func:`bilinear_replacement`.
    Options: see :class:`SpectrumConfig`.
    """
    if isinstance(model, TrainedBilinear):
        model = model.model()
    check_bilinear(model)  # before run_analysis asks a non-bilinear object for its fingerprint
    return run_analysis(spectrum.ANALYSIS, model, config, cache=cache, **options)


def bilinear_replacement(model, *, config: ReplacementConfig | None = None, cache=True,
                         **options) -> BilinearReplacementResult:
    """Fit a bilinear replacement of one MLP (``layer=``) on the model's own activations (the evaluation
    corpus), report its fidelity (held-out explained variance, loss with it spliced in), and eigendecompose it.

    A gated MLP (SwiGLU) starts from its gate/up weights in closed form; a plain one (GPT-2, Pythia, OPT, ...)
    has no second factor to start from, so its replacement is trained from a random start (``meta["init"]``
    says which). Every number of the result is about the replacement; its summary and figures carry the
    approximation error. Options (``directions=`` as for :func:`bilinear_spectrum`): see
    :class:`~workbench.analyses.bilinear.replacement.ReplacementConfig`.
    """
    return run_analysis(replacement.ANALYSIS, model, config, cache=cache, **options)
