"""The short public functions: ``wb.super_weights(model)`` and the experiments."""

from __future__ import annotations

from collections.abc import Sequence

from ..runner import run_analysis
from .detect import SuperWeightConfig, SuperWeightResult
from .evaluate import check_prompts


def super_weights(
    model,
    prompts: Sequence[str] | None = None,
    config: SuperWeightConfig | None = None,
    *,
    eval_file: str | None = None,
    cache=True,
    **options,
) -> SuperWeightResult:
    """Find the super weights of ``model``: streaming spike scan, iterative rounds, ablation.

    ``prompts``: detection prompts (default: a few short sentences, see
    :data:`~workbench.analyses.super_weights.DEFAULT_PROMPTS`); ``eval_file``: a UTF-8
    text file for the ablation effects (default: the shipped evaluation corpus).
    Other options: see :class:`~workbench.analyses.super_weights.SuperWeightConfig`.
    Cached by model fingerprint, config and the evaluation text's content.

    >>> sw = wb.super_weights(model)
    >>> sw.super_weights            # layer, row (output channel), col (input channel), effect, ...
    """
    if prompts is not None:
        options["prompts"] = check_prompts(prompts)
    if eval_file is not None:
        options["eval_file"] = str(eval_file)
    return run_analysis("super_weights", model, config, cache=cache, **options)


def super_experts(model, prompts: Sequence[str] | None = None, *, cache=True, **options):
    """Mixture-of-experts models: the experts whose removal destroys the model ("super experts"), the
    super weight inside each, and router statistics (load, mean routing weight). Options:
    :class:`~workbench.analyses.super_weights.experts.SuperExpertConfig`.

    >>> se = wb.super_experts(moe_model)
    >>> se.super_experts            # layer, expert, its largest write, removal KL, weight [row, col] inside
    """
    if prompts is not None:
        options["prompts"] = check_prompts(prompts)
    return run_analysis("super_experts", model, None, cache=cache, **options)


def _experiment(name: str, model, weights, cache, options):
    if weights is None:
        weights = super_weights(model, cache=cache).coordinates()
        if not weights:
            from ...errors import InputError

            raise InputError(f"wb.super_weights found no super weights in {model.name}; pass weights=((layer, row, col), ...)")
    options["weights"] = tuple(tuple(int(v) for v in w) for w in weights)
    prompts = options.get("prompts")
    if prompts is not None:
        options["prompts"] = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    return run_analysis(name, model, None, cache=cache, **options)


def prune_super_weights(model, weights=None, *, cache=True, **options):
    """Loss / perplexity and next-token distribution: intact, super weights pruned, and pruned with
    the super activation written back (``restore_fraction``). ``weights``: (layer, row, col) tuples,
    default the super weights :func:`super_weights` finds. Options: :class:`PruneConfig`."""
    return _experiment("super_weight_prune", model, weights, cache, options)


def scale_super_weights(model, weights=None, *, cache=True, **options):
    """Quality as the super weights are multiplied by each of ``scales`` (default 0 ... 3).
    Options: :class:`ScaleConfig`."""
    return _experiment("super_weight_scale", model, weights, cache, options)


def prune_outliers(model, weights=None, *, cache=True, **options):
    """Prune the ``top_fraction`` largest-|w| entries of all W_out matrices except the super weights,
    vs pruning the super weights, vs both. Options: :class:`OutlierConfig`."""
    return _experiment("super_weight_outliers", model, weights, cache, options)


def quantize_super_weights(model, weights=None, *, cache=True, **options):
    """Block-wise round-to-nearest quantization for each of ``bits`` x ``block_sizes``: plain vs clip
    outliers + restore the super weights in full precision. Options: :class:`QuantizeConfig`."""
    return _experiment("super_weight_quantize", model, weights, cache, options)


def trace_super_weight(model, weight=None, prompt: str | None = None, *, expert: int | None = None, cache=True,
                       **options):
    """Follow one super weight on ``prompt``: where its super activation appears, which parts of the
    residual stream (heads, MLPs, embeddings) drive its input channel, and which later heads attend to
    it, intact vs with the weight zeroed. ``weight``: (layer, row, col), default the super weight with
    the largest loss effect found by :func:`super_weights`; in a mixture of experts also ``expert``, the
    expert it sits in (default: inside the strongest super expert of :func:`super_experts`).
    Options: :class:`~.trace.TraceConfig`.

    >>> t = wb.trace_super_weight(model)
    >>> t.top_drivers(), t.top_readers()
    """
    if weight is not None:
        options["weight"] = tuple(int(v) for v in weight)
    if prompt is not None:
        options["prompt"] = prompt
    if expert is not None:
        options["expert"] = int(expert)
    return run_analysis("super_weight_trace", model, None, cache=cache, **options)


def strongest_super_weight(model) -> tuple[tuple[int, int, int], int]:
    """((layer, row, col), expert) of the super weight with the largest loss effect (cached :func:`super_weights`;
    for a mixture of experts, the weight inside the super expert whose removal costs most, from :func:`super_experts`;
    expert -1 for dense MLPs)."""
    from ...errors import UnsupportedModelError

    if model.arch.mlp == "moe":
        found = super_experts(model).super_experts
        if found.empty:
            raise UnsupportedModelError(f"wb.super_experts found no super expert in {model.name}: nothing to trace by "
                                        "default; pass weight=(layer, row, col) and expert=e")
        best = found.sort_values("kl", ascending=False).iloc[0]
        return (int(best["layer"]), int(best["row"]), int(best["col"])), int(best["expert"])
    found = super_weights(model).super_weights
    if found.empty:
        raise UnsupportedModelError(f"wb.super_weights found no super weights in {model.name}: nothing to trace "
                                    "by default; pass weight=(layer, row, col)")
    best = found.sort_values("delta_loss", ascending=False).iloc[0]
    return (int(best["layer"]), int(best["row"]), int(best["col"])), -1
