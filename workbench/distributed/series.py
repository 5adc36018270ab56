"""One analysis across the checkpoints of a training run, as one Result: a row per checkpoint and a figure.

Built from the per-checkpoint Results by :func:`checkpoint_series` (pure: no model, no cluster), so the series of
a distributed run and of a single-process run are built by the same code from results that are compared
directly. What a row holds comes from :data:`SUMMARIES` (one function per analysis: a few numbers that show how
the result moves along training); ``tables['rows']`` stacks the main table of every checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import InputError
from ..results import Result


@dataclass(frozen=True)
class SeriesConfig:
    analysis: str = "head_composition"  # the analysis run on every checkpoint
    options: str = "{}"  # its options, as JSON (what each checkpoint's config was made from)


def _head_composition(result: Result) -> dict[str, float]:
    pairs = result.tables["pairs"]
    out: dict[str, float] = {}
    for kind, rows in pairs.groupby("kind", sort=False):
        out[f"{kind} top score"] = float(rows["score"].max())
        out[f"{kind} pairs above null q99"] = float((rows["vs_null"] > 1).mean()) if "vs_null" in rows else float("nan")
    return out


def _super_weights(result: Result) -> dict[str, float]:
    table = result.tables["candidates"]
    supers = table[table["role"] == "super weight"]
    return {"super weights": float(len(supers)),
            "largest |super weight|": float(supers["weight"].abs().max()) if len(supers) else 0.0}


def _overview(result: Result) -> dict[str, float]:
    stats = result.tables["matrices"]
    return {f"{m} max outlier ratio": float(rows["outlier_ratio"].max())
            for m, rows in stats.groupby("matrix", sort=False)}


# analysis -> (its summary numbers, the table stacked across checkpoints, how many of its rows: None = all)
SUMMARIES: dict[str, tuple[Callable[[Result], dict[str, float]], str, int | None]] = {
    "head_composition": (_head_composition, "pairs", 20),
    "super_weights": (_super_weights, "candidates", None),
    "overview": (_overview, "matrices", None),
}


def step_of(label: str, index: int) -> int:
    """The training step a checkpoint's name gives (the last number in it: ``step1000``, ``checkpoint-500``),
    else its index in the series."""
    found = re.findall(r"\d+", label)
    return int(found[-1]) if found else index


@dataclass(frozen=True)
class CheckpointSeries(Result):
    """Tables: ``summary`` (one row per checkpoint: label, step, fingerprint and the analysis' summary numbers),
    ``rows`` (the analysis' main table of every checkpoint, stacked, with its label and step).
    ``meta['metrics']``: the summary's number columns, in order."""

    analysis = "checkpoint_series"
    title = "One analysis across checkpoints"
    config_cls = SeriesConfig

    @property
    def summary_table(self) -> pd.DataFrame:
        return self.tables["summary"]

    @property
    def metrics(self) -> list[str]:
        return list(self.meta["metrics"])

    @property
    def steps(self) -> list[int]:
        return [int(s) for s in self.summary_table["step"]]

    def summary(self) -> list[tuple[str, str]]:
        return [("analysis", self.config.analysis), ("checkpoints", str(len(self.summary_table))),
                ("steps", ", ".join(map(str, self.steps)))]


def checkpoint_series(results: Sequence[Result], labels: Sequence[str], *, analysis: str,
                      options: dict[str, Any] | None = None, steps: Sequence[int] | None = None) -> CheckpointSeries:
    """The series of ``results`` (one per checkpoint, in training order) named ``labels``."""
    if len(results) != len(labels) or not results:
        raise InputError(f"one label per result, and at least one: {len(results)} results, {len(labels)} labels")
    steps = list(steps) if steps is not None else [step_of(l, i) for i, l in enumerate(labels)]
    summarize, table, head = SUMMARIES.get(analysis, (lambda r: {}, "", None))
    rows, stacked = [], []
    for result, label, step in zip(results, labels, steps):
        rows.append({"checkpoint": label, "step": step, "fingerprint": result.fingerprint, **summarize(result)})
        frame = result.tables[table] if table else result.to_frame()
        frame = frame if head is None else frame.head(head)
        stacked.append(frame.assign(checkpoint=label, step=step)[["checkpoint", "step", *frame.columns]])
    summary = pd.DataFrame(rows)
    metrics = [c for c in summary.columns if c not in ("checkpoint", "step", "fingerprint")]
    config = SeriesConfig(analysis, json.dumps(options or {}, sort_keys=True, default=str))
    return CheckpointSeries(config=config, model_id=f"{labels[0]} .. {labels[-1]}", fingerprint=results[-1].fingerprint,
                            tables={"summary": summary, "rows": pd.concat(stacked, ignore_index=True)},
                            meta={"metrics": metrics, "labels": list(labels)})
