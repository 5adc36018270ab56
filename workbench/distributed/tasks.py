"""What runs on a worker: a model loaded once per worker process, an analysis run through the result cache.

Tasks are plain functions of small, picklable arguments (a :class:`ModelSource` names the model by path; the
model itself never travels), so a task re-run after its worker died needs nothing from the dead one. Each
returns the Result with whether it was computed or read from the cache, which is how a rerun shows that it
resumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..cache import get_cache
from ..results import Result

_MODELS: dict[ModelSource, Any] = {}  # per worker process: the model its last tasks used


@dataclass(frozen=True)
class ModelSource:
    """A model every worker can load by itself: ``path`` (a folder, a ``.gguf`` file, a tiny model's or a hub
    name; None: the embedded model) read with ``wb.load_weights`` when ``weights_only`` (shards, nothing
    built), else with ``wb.load_model`` and ``options`` (e.g. ``(("dtype", "float32"),)``)."""

    path: str | None = None
    weights_only: bool = False
    options: tuple[tuple[str, Any], ...] = field(default=())

    def load(self) -> Any:
        from ..models import load_model, load_weights

        if self.weights_only:
            if self.path is None:
                raise ValueError("weights_only needs a checkpoint folder")
            return load_weights(self.path, **dict(self.options))
        return load_model(self.path, progress=False, **dict(self.options))


def model_of(source: ModelSource) -> Any:
    """``source`` loaded, once per worker; a worker keeps one model at a time (a new one replaces it)."""
    if source not in _MODELS:
        _MODELS.clear()
        _MODELS[source] = source.load()
    return _MODELS[source]


@dataclass(frozen=True)
class TaskOutput:
    result: Result
    computed: bool  # False: read back from the cache
    pid: int  # the worker process that ran it


def _cached(fn, cache_root: str | None, use_cache: bool) -> TaskOutput:
    store = get_cache(cache_root)
    before = store.stats["misses"]
    result = fn(store if use_cache else False)
    return TaskOutput(result, not use_cache or store.stats["misses"] > before, os.getpid())


def attribute_task(item: tuple[ModelSource, str | None, bool, dict[str, Any]]) -> TaskOutput:
    """One prompt's attribution: ``wb.attribute(model, **options)`` through the cache at ``cache_root``."""
    from ..analyses.attribution.api import attribute

    source, cache_root, use_cache, options = item
    model = model_of(source)
    return _cached(lambda cache: attribute(model, cache=cache, **options), cache_root, use_cache)


def analysis_task(item: tuple[ModelSource, str | None, bool, str, dict[str, Any]]) -> TaskOutput:
    """Analysis ``name`` with ``options`` on one model (one checkpoint of a series), through the cache."""
    from ..engine.runner import run_analysis

    source, cache_root, use_cache, name, options = item
    model = model_of(source)
    return _cached(lambda cache: run_analysis(name, model, cache=cache, **options), cache_root, use_cache)
