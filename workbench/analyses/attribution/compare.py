"""Compare attribution methods on several prompts by their faithfulness."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..._progress import progress
from ...engine.registry import Analysis
from ...errors import InputError
from ...results import Result
from ...types import Importances
from .baselines import BASELINES, BaselineParams, baseline_importance
from .common import prepare
from .faithfulness import SOFT_METRICS, FaithfulnessParams, faithfulness, summarise
from .reagent import ReagentParams, reagent_sequence, resolve_probe_dtype
from .result import target_probabilities
from ...models.contract import HookedSource

ALL_METHODS = ("reagent", *BASELINES)


@dataclass(frozen=True)
class CompareConfig(ReagentParams, BaselineParams, FaithfulnessParams):
    prompts: tuple[str, ...] = ("The Eiffel Tower is located in the city of",
                                "When Mary and John went to the store, John gave a drink to")
    methods: tuple[str, ...] = ALL_METHODS  # any of reagent + the baselines
    max_new_tokens: int = 2  # generated tokens attributed per prompt
    prepend_bos: bool | None = None


class ComparisonResult(Result):
    """Faithfulness of several attribution methods.

    Tables: ``faithfulness`` (one row per method x prompt x target x metric), ``summary``
    (method x metric: mean, random baseline, log ratio; Soft-NS / Soft-NC and the retention-controlled
    pi-Soft-NS / pi-Soft-NC, see :mod:`.faithfulness`). Tensors ``importance/<method>/<prompt>``
    [target, pos]. ``meta['sequences']``: per prompt the tokens, ids and n_prompt.
    """

    analysis = "compare_attributions"
    title = "Attribution methods compared (faithfulness)"
    config_cls = CompareConfig

    # --------------------------------------------------------------- contents
    @property
    def faithfulness(self) -> pd.DataFrame:
        """One row per method x prompt x target x metric."""
        return self.tables["faithfulness"]

    @property
    def method_summary(self) -> pd.DataFrame:
        """One row per method x metric: mean, the random baseline's, and their log ratio."""
        return self.tables["summary"]

    def importances(self, method: str, prompt: int) -> Importances:
        """Importance of every position for every target of prompt ``prompt`` (an index) by ``method``."""
        key = f"importance/{method}/{prompt}"
        if key not in self.tensors:
            raise InputError(f"no importance of {method!r} for prompt {prompt}; methods: {list(self.config.methods)}, "
                             f"prompts 0-{len(self.config.prompts) - 1}")
        return self.tensors[key]

    def tokens(self, prompt: int) -> list[str]:
        """Every token of prompt ``prompt``'s sequence (prompt, then targets) as text."""
        return list(self.meta["sequences"][prompt]["tokens"])

    def n_prompt(self, prompt: int) -> int:
        """Tokens before the first target in prompt ``prompt``'s sequence."""
        return int(self.meta["sequences"][prompt]["n_prompt"])

    def n_targets(self, prompt: int) -> int:
        return len(self.meta["sequences"][prompt]["ids"]) - self.n_prompt(prompt)

    def summary(self) -> list[tuple[str, str]]:
        s = self.method_summary
        soft = s[s["metric"].isin(SOFT_METRICS) & (s["method"] != "random")]
        best = soft.sort_values("log_ratio", ascending=False).groupby("metric").head(1)
        lines = [("model", self.model_id), ("prompts", str(len(self.config.prompts))),
                 ("methods", ", ".join(self.config.methods))]
        lines += [(f"best by {r.metric}", f"{r.method} (log ratio vs random {r.log_ratio:+.2f})") for r in best.itertuples()]
        return lines

    def wide(self) -> pd.DataFrame:
        """Summary pivoted: one row per method, one column per metric (log ratio for soft metrics, else mean)."""
        s = self.method_summary.copy()
        s["shown"] = s["log_ratio"].where(s["metric"].isin(SOFT_METRICS), s["mean"])
        return s.pivot(index="method", columns="metric", values="shown").reset_index()


def compute_comparison(model: HookedSource, config: CompareConfig, mlm=None) -> ComparisonResult:
    model.require_finite_weights()
    tables, tensors, sequences = [], {}, []
    for i, prompt in enumerate(progress(config.prompts, desc="prompts")):
        seq = prepare(model, prompt, None, max_new_tokens=config.max_new_tokens, prepend_bos=config.prepend_bos)
        imps = {}
        for method in config.methods:
            if method == "reagent":
                imps[method] = reagent_sequence(model, seq, config, mlm)["importance"]
            else:
                imps[method] = baseline_importance(model, seq, method, config)
            tensors[f"importance/{method}/{i}"] = imps[method]
        table = faithfulness(model, seq, imps, config, max_batch_tokens=config.max_batch_tokens)
        ids = seq.ids.tolist()
        tokens = model.to_str_tokens(ids)
        table.insert(1, "prompt", prompt)
        table.insert(2, "prompt_index", i)
        table.insert(4, "target", [tokens[seq.n_prompt + j] for j in table["target_index"]])
        tables.append(table)
        tensors[f"target_probability/{i}"] = target_probabilities(model, seq)
        sequences.append({"tokens": tokens, "ids": ids, "n_prompt": seq.n_prompt})
    long = pd.concat(tables, ignore_index=True)
    return ComparisonResult(config=config, model_id=model.name, fingerprint=model.fingerprint(), tensors=tensors,
                            tables={"faithfulness": long, "summary": summarise(long)}, meta={"sequences": sequences})


def check_inputs(model, config: CompareConfig) -> CompareConfig:
    """``prepare``: prompts and methods are checked before any work (and before a cache key is made for them)."""
    if isinstance(config.prompts, str) or not config.prompts:
        raise InputError("prompts must be a non-empty list of strings")
    unknown = [m for m in config.methods if m not in ALL_METHODS]
    if unknown or not config.methods:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    return resolve_probe_dtype(model, config)


ANALYSIS = Analysis(
    name="compare_attributions",
    description="Soft-NS / Soft-NC against random importance, hard comprehensiveness / sufficiency",
    config_cls=CompareConfig,
    result_cls=ComparisonResult,
    compute=compute_comparison,
    in_report=False,
    prepare=check_inputs,
)
