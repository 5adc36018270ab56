"""Compare attribution methods on several prompts by their faithfulness."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..._progress import progress
from ...errors import InputError
from ...results import Result
from .baselines import BASELINES, BaselineParams, baseline_importance
from .common import prepare
from .faithfulness import FaithfulnessParams, faithfulness, summarise
from .reagent import ReagentParams, reagent_sequence
from .result import target_probabilities

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
    (method x metric: mean, random baseline, log ratio). Tensors ``importance/<method>/<prompt>``
    [target, pos]. ``meta['sequences']``: per prompt the tokens, ids and n_prompt.
    """

    analysis = "compare_attributions"
    title = "Attribution methods compared (faithfulness)"

    def summary(self) -> list[tuple[str, str]]:
        s = self.tables["summary"]
        soft = s[s["metric"].isin(["soft_ns", "soft_nc"]) & (s["method"] != "random")]
        best = soft.sort_values("log_ratio", ascending=False).groupby("metric").head(1)
        lines = [("model", self.model_id), ("prompts", str(len(self.config.prompts))),
                 ("methods", ", ".join(self.config.methods))]
        lines += [(f"best by {r.metric}", f"{r.method} (log ratio vs random {r.log_ratio:+.2f})") for r in best.itertuples()]
        return lines

    def wide(self) -> pd.DataFrame:
        """Summary pivoted: one row per method, one column per metric (log ratio for soft metrics, else mean)."""
        s = self.tables["summary"].copy()
        s["shown"] = s["log_ratio"].where(s["metric"].isin(["soft_ns", "soft_nc"]), s["mean"])
        return s.pivot(index="method", columns="metric", values="shown").reset_index()

    def figures(self) -> dict:
        from ...render import attribution as render

        return render.comparison_figures(self)

    def report_html(self) -> str:
        from ...render.attribution import comparison_html

        return comparison_html(self)

    def widget(self):
        from ...widgets.attribution import ComparisonWidget

        return ComparisonWidget(self)


def compute_comparison(model, config: CompareConfig, mlm=None) -> ComparisonResult:
    model.require_finite_weights()
    if isinstance(config.prompts, str) or not config.prompts:
        raise InputError("prompts must be a non-empty list of strings")
    unknown = [m for m in config.methods if m not in ALL_METHODS]
    if unknown or not config.methods:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
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
