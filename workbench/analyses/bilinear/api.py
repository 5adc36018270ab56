"""The short public functions (re-exported as ``wb.train_digits``, ``wb.bilinear_spectrum``, ...)."""

from __future__ import annotations

from ..runner import run_analysis
from .layers import BilinearClassifier, BilinearLM, BilinearMLP
from .spectrum import BilinearSpectrumResult, SpectrumConfig, check_bilinear
from .training import (DigitsConfig, LMConfig, TextSource, ToyConfig, TrainedBilinear, TrainingSource,
                       digits_data_id)


def train_digits(config: DigitsConfig | None = None, *, cache=True, **options) -> TrainedBilinear:
    """Train (or fetch from the cache) a one-layer bilinear classifier on scikit-learn's 8x8 digits.

    Options: see :class:`DigitsConfig` (d_hidden, input_noise, weight_decay, epochs, seed, ...).
    ``.model()`` on the result gives the :class:`BilinearClassifier`; pass either to :func:`bilinear_spectrum`.
    """
    return run_analysis("bilinear_train_digits", TrainingSource("digits", digits_data_id()), config, cache=cache, **options)


def train_toy(config: ToyConfig | None = None, *, cache=True, **options) -> TrainedBilinear:
    """Train (or fetch) a bilinear layer on planted quadratic forms; the planted eigenpairs are in its tensors."""
    return run_analysis("bilinear_train_toy", TrainingSource("toy", "planted-quadratic-forms/1"), config, cache=cache, **options)


def train_bilinear_lm(config: LMConfig | None = None, *, text: str | None = None, cache=True, **options) -> TrainedBilinear:
    """Train (or fetch) a small bilinear transformer on the characters of ``text`` (default: the shipped eval corpus)."""
    from ...corpus import eval_text

    return run_analysis("bilinear_train_lm", TextSource(eval_text() if text is None else text), config, cache=cache, **options)


def bilinear_spectrum(model, config: SpectrumConfig | None = None, *, directions=None, cache=True,
                      **options) -> BilinearSpectrumResult:
    """Eigendecompose the interaction matrices of a bilinear layer, one per output direction.

    ``model``: a :class:`BilinearClassifier`, :class:`BilinearMLP`, :class:`BilinearLM` (``layer=``) or a
    trained result. ``directions``: 'outputs', 'svd', 'tokens' (with ``tokens=``), or a tensor / nested
    sequence [k, d_out] of output-space vectors (e.g. a direction from another analysis). A pretrained LM
    (SwiGLU / GELU MLPs) raises :class:`~workbench.UnsupportedModelError`: use :func:`bilinear_replacement`.
    """
    if isinstance(model, TrainedBilinear):
        model = model.model()
    check_bilinear(model)  # before run_analysis asks a non-bilinear object for its fingerprint
    _direction_options(directions, options)
    return run_analysis("bilinear_spectrum", model, config, cache=cache, **options)


def bilinear_replacement(model, config=None, *, layer: int | None = None, directions=None, cache=True, **options):
    """Fit a bilinear replacement of ``layer``'s MLP on the model's own activations (the evaluation
    corpus), report its fidelity (held-out explained variance, loss with it spliced in), and eigendecompose it.

    A gated MLP (SwiGLU) starts from its gate/up weights in closed form; a plain one (GPT-2, Pythia, OPT, ...)
    has no second factor to start from, so its replacement is trained from a random start (``meta["init"]``
    says which). Every number of the result is about the replacement; its summary and figures carry the
    approximation error. Options: see :class:`~workbench.analyses.bilinear.replacement.ReplacementConfig`.
    """
    if layer is not None:
        options["layer"] = layer
    _direction_options(directions, options)
    return run_analysis("bilinear_replacement", model, config, cache=cache, **options)


def _direction_options(directions, options: dict) -> None:
    """``directions`` as config options: a kind name, or vectors given directly."""
    if directions is None:
        return
    if isinstance(directions, str):
        options["directions"] = directions
    else:
        options["directions"] = "vectors"
        options["vectors"] = _as_vectors(directions)


def _as_vectors(directions) -> tuple[tuple[float, ...], ...]:
    import torch

    t = torch.as_tensor(directions, dtype=torch.float64).detach().cpu()
    if t.ndim == 1:
        t = t[None]
    return tuple(tuple(float(v) for v in row) for row in t.tolist())


__all__ = ["BilinearClassifier", "BilinearLM", "BilinearMLP", "bilinear_replacement", "bilinear_spectrum", "train_bilinear_lm", "train_digits", "train_toy"]
