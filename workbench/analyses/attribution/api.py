"""The public functions: ``wb.reagent``, ``wb.attribute``, ``wb.compare_attributions``.

Each is ``f(model, *, config=None, cache=True, **options)`` like every analysis': the prompt, the target and the
method are options (``wb.reagent(model, prompt="...", target=" Paris")``). Each analysis' ``prepare`` refuses an
unknown method or no prompts before any work; ``make_config`` makes lists tuples. What stays here is a change of
an option's type, because the config's field types are checked when it is built, before any ``prepare``: ``target=``
as a NumPy integer or a 0-d tensor becomes an ``int``, one prompt or method given as a string a tuple of one.
``mlm=``, a loaded masked LM, is a live object no cache key can hold: it goes to ``run_analysis`` as a live input
(such a run is never cached). ``__all__``: what ``workbench`` exports.
"""

from __future__ import annotations

from typing import Any

from ...engine.runner import run_analysis
from ...errors import InputError
from . import baselines, compare
from . import reagent as reagent_analysis  # the module; ``reagent`` here is the public function
from .baselines import AttributeConfig
from .chat import as_messages
from .common import as_target
from .compare import CompareConfig, ComparisonResult
from .reagent import ReagentConfig, ReagentResult
from .replacers import MaskedLM
from .result import AttributionResult

__all__ = ["MaskedLM", "attribute", "compare_attributions", "reagent"]


def _target_as_stored(options: dict) -> dict:
    """``target=`` as the config stores it (:func:`.common.as_target`: text, or an ``int`` for any integer id)."""
    if "target" in options:
        options["target"] = as_target(options["target"])
    return options


def _chat_as_stored(options: dict) -> dict:
    """``messages=`` ({"role", "content"} dicts) as the config stores them: (role, content) pairs, which key the
    cache; the prompt is then the rendered chat, so a prompt given too is refused."""
    if options.get("messages") is None:
        return options
    if options.get("prompt"):
        raise InputError("give prompt= or messages=, not both")
    return {**options, "messages": as_messages(options["messages"]), "prompt": ""}


def _one_or_many(options: dict) -> dict:
    """``prompts=`` / ``methods=`` given as one string: a tuple of one."""
    for key in ("prompts", "methods"):
        if isinstance(options.get(key), str):
            options[key] = (options[key],)
    return options


def _with_mlm(mlm: MaskedLM | None, options: dict) -> tuple[dict[str, Any] | None, dict]:
    """The live inputs and options of a run with the masked-LM replacer ``mlm`` (``replacer`` defaults to "mlm")."""
    if mlm is None:
        return None, options
    return {"mlm": mlm}, {"replacer": "mlm", **options}


def reagent(model, *, config: ReagentConfig | None = None, cache=True, mlm: MaskedLM | None = None,
            **options) -> ReagentResult:
    """ReAGent attribution of ``target=`` (text or a token id; default: each of ``max_new_tokens`` greedily
    generated tokens) to the tokens of ``prompt=``, or of ``messages=``: a chat (``[{"role": "user", "content":
    "..."}]``) rendered with the tokenizer's chat template, the assistant's turn opened, where only the messages'
    own tokens are attributed (the template's are context, like BOS).

    Options: see :class:`~workbench.analyses.attribution.reagent.ReagentConfig` (``n_probes``,
    ``max_steps``, ``keep_top_n``, ``stop_top_k``, ``replacing_ratio``, ``replacer``, ``seed``...).
    ``mlm``: a loaded :class:`MaskedLM` for ``replacer="mlm"`` (not cached; or give ``mlm_path`` to cache).

    >>> attr = wb.reagent(model, prompt="The capital of France is", target=" Paris")
    >>> chat = wb.reagent(model, messages=[{"role": "user", "content": "What is the capital of France?"}])
    """
    live, options = _with_mlm(mlm, _chat_as_stored(_target_as_stored(options)))
    return run_analysis(reagent_analysis.ANALYSIS, model, config, cache=cache, live_inputs=live, **options)


def attribute(model, *, method: str | None = None, config: AttributeConfig | ReagentConfig | None = None, cache=True,
              **options) -> AttributionResult:
    """Attribute ``target=`` (or each generated token) to the tokens of ``prompt=`` with ``method``:
    ``"reagent"`` (default, :func:`reagent`) or one of ``gradient_norm``, ``input_x_gradient``,
    ``integrated_gradients``, ``attention_last``, ``attention_mean``, ``attention_rollout``, ``occlusion``
    (the ``attribution`` analysis; options: :class:`~workbench.analyses.attribution.baselines.AttributeConfig`).
    ``messages=`` instead of ``prompt=``: a chat, as in :func:`reagent`.
    """
    method = method or (config.method if isinstance(config, AttributeConfig) else "reagent")
    if method == "reagent":
        if isinstance(config, AttributeConfig):
            raise InputError("method='reagent' takes a ReagentConfig, not an AttributeConfig")
        return reagent(model, config=config, cache=cache, **options)
    if isinstance(config, ReagentConfig):
        raise InputError(f"method={method!r} takes an AttributeConfig, not a ReagentConfig")
    return run_analysis(baselines.ANALYSIS, model, config, cache=cache, method=method,
                        **_chat_as_stored(_target_as_stored(options)))


def compare_attributions(model, *, config: CompareConfig | None = None, cache=True, mlm: MaskedLM | None = None,
                         **options) -> ComparisonResult:
    """Faithfulness of ``methods=`` (default: all) on ``prompts=``: a tidy table method x prompt x target x
    metric (``.to_frame()``), and ``.tables['summary']`` with the paper's log(sum method / sum random).
    Options: :class:`~workbench.analyses.attribution.compare.CompareConfig`; ``mlm`` as in :func:`reagent`."""
    live, options = _with_mlm(mlm, _one_or_many(options))
    return run_analysis(compare.ANALYSIS, model, config, cache=cache, live_inputs=live, **options)
