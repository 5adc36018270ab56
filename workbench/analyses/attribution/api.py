"""The public functions: ``wb.reagent``, ``wb.attribute``, ``wb.compare_attributions``.

Each is ``f(model, *, config=None, cache=True, **options)`` like every analysis': the prompt, the target and the
method are options (``wb.reagent(model, prompt="...", target=" Paris")``). Each analysis' ``prepare`` refuses an
unknown method or no prompts before any work; ``make_config`` makes lists tuples. Two things stay here. A change of
an option's type, because the config's field types are checked when it is built, before any ``prepare``: ``target=``
as a NumPy integer or a 0-d tensor becomes an ``int``, one prompt or method given as a string a tuple of one. And
``mlm=``, a loaded masked LM: a live object no cache key can hold, so with it the run is computed here, uncached.
"""

from __future__ import annotations

from ...engine.registry import get_analysis
from ...engine.runner import make_config, run_analysis
from ...errors import InputError
from .baselines import AttributeConfig
from .chat import as_messages
from .common import as_target
from .compare import CompareConfig, ComparisonResult
from .reagent import ReagentConfig, ReagentResult
from .replacers import MaskedLM
from .result import AttributionResult


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


def _with_mlm(name: str, model, config, mlm: MaskedLM, options: dict):
    """Run analysis ``name`` with the masked-LM replacer ``mlm``, uncached (``replacer`` defaults to "mlm")."""
    spec = get_analysis(name)
    config = make_config(name, config, **{"replacer": "mlm", **options})
    return spec.compute(model, spec.prepare(model, config) if spec.prepare else config, mlm)


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
    options = _chat_as_stored(_target_as_stored(options))
    if mlm is not None:
        return _with_mlm("reagent", model, config, mlm, options)
    return run_analysis("reagent", model, config, cache=cache, **options)  # type: ignore[return-value]


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
        return reagent(model, config=config, cache=cache, **options)  # type: ignore[arg-type]
    result = run_analysis("attribution", model, config, cache=cache, method=method,
                          **_chat_as_stored(_target_as_stored(options)))
    return result  # type: ignore[return-value]


def compare_attributions(model, *, config: CompareConfig | None = None, cache=True, mlm: MaskedLM | None = None,
                         **options) -> ComparisonResult:
    """Faithfulness of ``methods=`` (default: all) on ``prompts=``: a tidy table method x prompt x target x
    metric (``.to_frame()``), and ``.tables['summary']`` with the paper's log(sum method / sum random).
    Options: :class:`~workbench.analyses.attribution.compare.CompareConfig`; ``mlm`` as in :func:`reagent`."""
    options = _one_or_many(options)
    if mlm is not None:
        return _with_mlm("compare_attributions", model, config, mlm, options)
    return run_analysis("compare_attributions", model, config, cache=cache, **options)  # type: ignore[return-value]
