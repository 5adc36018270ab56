"""Token attribution: ReAGent (our batched implementation), baseline methods, faithfulness metrics.

Public entry points (re-exported by ``workbench``): :func:`reagent`, :func:`attribute`,
:func:`compare_attributions`; :class:`MaskedLM` for the masked-LM replacer.
"""

from __future__ import annotations

from typing import SupportsIndex

from ..registry import Analysis
from ..runner import make_config, run_analysis
from .baselines import BASELINES, AttributeConfig, BaselineResult, compute_attribution
from .compare import ALL_METHODS, CompareConfig, ComparisonResult, compute_comparison
from .faithfulness import faithfulness, summarise
from .reagent import ReagentConfig, ReagentResult, compute_reagent
from .replacers import MaskedLM
from .common import as_target
from .result import AttributionResult

REAGENT = Analysis(
    name="reagent",
    title="ReAGent attribution",
    description="which context tokens made the model produce each generated token (ReAGent, batched)",
    config_cls=ReagentConfig,
    result_cls=ReagentResult,
    compute=compute_reagent,
    in_report=True,
)
ATTRIBUTION = Analysis(
    name="attribution",
    title="Attribution (baseline method)",
    description="gradient norm, input x gradient, integrated gradients, attention, rollout, occlusion",
    config_cls=AttributeConfig,
    result_cls=BaselineResult,
    compute=compute_attribution,
    in_report=False,
)
COMPARE = Analysis(
    name="compare_attributions",
    title="Attribution methods compared (faithfulness)",
    description="Soft-NS / Soft-NC against random importance, hard comprehensiveness / sufficiency",
    config_cls=CompareConfig,
    result_cls=ComparisonResult,
    compute=compute_comparison,
    in_report=False,
)
ANALYSES = (REAGENT, ATTRIBUTION, COMPARE)


def reagent(model, prompt: str | None = None, target: str | SupportsIndex | None = None, *, config: ReagentConfig | None = None,
            mlm: MaskedLM | None = None, cache=True, **options) -> ReagentResult:
    """ReAGent attribution of ``target`` (or of each greedily generated token) to the tokens of ``prompt``.

    Options: see :class:`~workbench.analyses.attribution.reagent.ReagentConfig` (``n_probes``,
    ``max_steps``, ``keep_top_n``, ``stop_top_k``, ``replacing_ratio``, ``replacer``, ``seed``,
    ``max_new_tokens``...). ``mlm``: a loaded :class:`MaskedLM` for ``replacer="mlm"`` (not cached;
    or give ``mlm_path`` to cache). Cached by model fingerprint and config.
    """
    if prompt is not None:
        options["prompt"] = prompt
    if target is not None:
        options["target"] = as_target(target)
    if mlm is not None:
        options.setdefault("replacer", "mlm")
        return compute_reagent(model, make_config("reagent", config, **options), mlm)
    return run_analysis("reagent", model, config, cache=cache, **options)


def attribute(model, prompt: str, method: str = "reagent", target: str | SupportsIndex | None = None, *, cache=True,
              **options) -> AttributionResult:
    """Attribute ``target`` (or each generated token) to the prompt's tokens with ``method``:
    ``"reagent"`` or one of ``gradient_norm``, ``input_x_gradient``, ``integrated_gradients``,
    ``attention_last``, ``attention_mean``, ``attention_rollout``, ``occlusion``."""
    if method == "reagent":
        return reagent(model, prompt, target, cache=cache, **options)
    if method not in BASELINES:
        from ...errors import InputError

        raise InputError(f"unknown attribution method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    return run_analysis("attribution", model, None, cache=cache, prompt=prompt, method=method, target=as_target(target),
                        **options)


def compare_attributions(model, prompts=None, methods=None, *, cache=True, mlm: MaskedLM | None = None,
                         **options) -> ComparisonResult:
    """Faithfulness of ``methods`` (default: all) on ``prompts``: a tidy table method x prompt x target x
    metric (``.to_frame()``), and ``.tables['summary']`` with the paper's log(sum method / sum random)."""
    if isinstance(prompts, str):
        prompts = (prompts,)
    if prompts is not None:
        options["prompts"] = tuple(prompts)
    if methods is not None:
        options["methods"] = (methods,) if isinstance(methods, str) else tuple(methods)
    for key in ("ratios", "retention"):
        if key in options:
            options[key] = tuple(options[key])
    if mlm is not None:
        options.setdefault("replacer", "mlm")
        return compute_comparison(model, make_config("compare_attributions", None, **options), mlm)
    return run_analysis("compare_attributions", model, None, cache=cache, **options)


__all__ = [
    "ALL_METHODS", "ANALYSES", "AttributeConfig", "AttributionResult", "BaselineResult", "CompareConfig",
    "ComparisonResult", "MaskedLM", "ReagentConfig", "ReagentResult", "attribute", "compare_attributions",
    "faithfulness", "reagent", "summarise",
]
