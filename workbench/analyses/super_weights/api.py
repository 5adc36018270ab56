"""The public functions: ``wb.super_weights(model)`` and the experiments (``__all__``: what ``workbench`` exports).

Each is ``f(model, *, config=None, cache=True, **options)``; what is derived from the options (checked prompts,
the evaluation text's digest, the default super weights) is filled in by each analysis' ``prepare``.
"""

from __future__ import annotations

from ...engine.runner import run_analysis
from . import detect, experiments, experts, trace
from .detect import SuperWeightConfig, SuperWeightResult
from .experiments import ExperimentResult
from .experts import SuperExpertConfig, SuperExpertResult
from .trace import TraceConfig, TraceResult

__all__ = ["prune_outliers", "prune_super_weights", "quantize_super_weights", "scale_super_weights",
           "super_experts", "super_weights", "trace_super_weight"]


def super_weights(model, *, config: SuperWeightConfig | None = None, cache=True, **options) -> SuperWeightResult:
    """Find the super weights of ``model``: streaming spike scan, iterative rounds, ablation.

    ``prompts=``: detection prompts (default: a few short sentences, see
    :data:`~workbench.analyses.super_weights.DEFAULT_PROMPTS`); ``eval_file=``: a UTF-8
    text file for the ablation effects (default: the shipped evaluation corpus).
    Other options: see :class:`~workbench.analyses.super_weights.SuperWeightConfig`.
    Cached by model fingerprint, config and the evaluation text's content.

    >>> sw = wb.super_weights(model)
    >>> sw.super_weights            # layer, row (output channel), col (input channel), effect, ...
    """
    return run_analysis(detect.ANALYSIS, model, config, cache=cache, **options)


def super_experts(model, *, config: SuperExpertConfig | None = None, cache=True, **options) -> SuperExpertResult:
    """Mixture-of-experts models: the experts whose removal destroys the model ("super experts"), the
    super weight inside each, and router statistics (load, mean routing weight). Options:
    :class:`~workbench.analyses.super_weights.experts.SuperExpertConfig`.

    >>> se = wb.super_experts(moe_model)
    >>> se.super_experts            # layer, expert, its largest write, removal KL, weight [row, col] inside
    """
    return run_analysis(experts.ANALYSIS, model, config, cache=cache, **options)


def prune_super_weights(model, *, config=None, cache=True, **options) -> ExperimentResult:
    """Loss / perplexity and next-token distribution: intact, super weights pruned, and pruned with
    the super activation written back (``restore_fraction``). ``weights=``: (layer, row, col) tuples,
    default the super weights :func:`super_weights` finds. Options: :class:`PruneConfig`."""
    return run_analysis(experiments.PRUNE, model, config, cache=cache, **options)


def scale_super_weights(model, *, config=None, cache=True, **options) -> ExperimentResult:
    """Quality as the super weights are multiplied by each of ``scales`` (default 0 ... 3).
    Options: :class:`ScaleConfig`."""
    return run_analysis(experiments.SCALE, model, config, cache=cache, **options)


def prune_outliers(model, *, config=None, cache=True, **options) -> ExperimentResult:
    """Prune the ``top_fraction`` largest-|w| entries of all W_out matrices except the super weights,
    vs pruning the super weights, vs both. Options: :class:`OutlierConfig`."""
    return run_analysis(experiments.OUTLIERS, model, config, cache=cache, **options)


def quantize_super_weights(model, *, config=None, cache=True, **options) -> ExperimentResult:
    """Block-wise round-to-nearest quantization for each of ``bits`` x ``block_sizes``: plain vs clip
    outliers + restore the super weights in full precision. Options: :class:`QuantizeConfig`."""
    return run_analysis(experiments.QUANTIZE, model, config, cache=cache, **options)


def trace_super_weight(model, *, config: TraceConfig | None = None, cache=True, **options) -> TraceResult:
    """Follow one super weight on ``prompt=``: where its super activation appears, which parts of the
    residual stream (heads, MLPs, embeddings) drive its input channel, and which later heads attend to
    it, intact vs with the weight zeroed. ``weight=``: (layer, row, col), default the super weight with
    the largest loss effect found by :func:`super_weights`; in a mixture of experts also ``expert=``, the
    expert it sits in (default: inside the strongest super expert of :func:`super_experts`).
    Options: :class:`~.trace.TraceConfig`.

    >>> t = wb.trace_super_weight(model, weight=(2, 1827, 7890), prompt="Summer is hot. Winter is")
    >>> t.top_drivers(), t.top_readers()
    """
    return run_analysis(trace.ANALYSIS, model, config, cache=cache, **options)
