"""Attribution of a dataset of prompts on a cluster: one task per prompt, each result cached per prompt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from .._paths import cache_root as resolved_root
from ..cache import ResultCache
from ..errors import InputError
from ..analyses.attribution.result import AttributionResult
from .cluster import Cluster, using
from .tasks import ModelSource, TaskOutput, attribute_task


@dataclass(frozen=True)
class DatasetRun:
    """The results of a dataset run, in the prompts' order, and how each was had."""

    results: list[AttributionResult]  # ReagentResult for method="reagent"
    computed: list[bool]  # per prompt: computed in this run (False: read back from the cache)
    workers: list[int]  # per prompt: the process id of the worker that ran it

    @property
    def n_computed(self) -> int:
        return sum(self.computed)


def as_items(prompts: Sequence[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """Each prompt as the options of one attribution: a string is ``{"prompt": text}``; a dict is taken as is
    (e.g. ``{"prompt": ..., "target": " Paris"}``)."""
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of prompts, not one string")
    items = [{"prompt": p} if isinstance(p, str) else dict(p) for p in prompts]
    bad = [p for p in items if not (p.get("prompt") or p.get("messages"))]
    if bad:
        raise InputError(f"every item needs a prompt or messages; {len(bad)} do not, e.g. {bad[0]}")
    return items


def attribute_dataset(model: str | os.PathLike | None, prompts: Sequence[str | dict[str, Any]], *,
                      method: str = "reagent", cluster: Cluster | str | None = None,
                      cache: bool = True, cache_root: str | os.PathLike | ResultCache | None = None,
                      load_options: dict[str, Any] | None = None, **options: Any) -> DatasetRun:
    """``wb.attribute(model, method=method, prompt=p, **options)`` for every prompt ``p``, side by side on the
    cluster's workers.

    ``model``: what each worker loads for itself with ``wb.load_model`` (a folder, a ``.gguf`` file, a tiny model
    name or hub id; None: the embedded model), with ``load_options``. Every result is stored in the result
    cache (``cache_root``: its folder, shared by the workers; default: this process's) under the same key as a
    single-process call, so a rerun after an interruption computes only the prompts not yet done, and the
    results equal the single-process run's.
    """
    items = as_items(prompts)
    root = str(cache_root.root.parent if isinstance(cache_root, ResultCache) else resolved_root(cache_root))
    source = ModelSource(None if model is None else str(model), options=tuple(sorted((load_options or {}).items())))
    tasks = [(source, root, cache, {"method": method, **options, **item})
             for item in items]
    with using(cluster) as c:
        outputs: list[TaskOutput] = c.map(attribute_task, tasks, desc=f"{method} on {len(tasks)} prompts")
    return DatasetRun([cast(AttributionResult, o.result) for o in outputs], [o.computed for o in outputs], [o.pid for o in outputs])
