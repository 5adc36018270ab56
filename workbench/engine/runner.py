"""Run any registered analysis through the result cache."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, overload

import torch

from .._threads import sized_threads
from ..cache import ResultCache, cache_key, get_cache
from ..errors import CacheCorruptError, InputError
from ..models import HookedModel
from ..results import Result
from .registry import Analysis, ConfigT, ResultT, get_analysis

log = logging.getLogger(__name__)  # under "workbench": what each analysis ran on


def _spec(analysis: str | Analysis[Any, Any]) -> Analysis[Any, Any]:
    return get_analysis(analysis) if isinstance(analysis, str) else analysis


@overload
def make_config(analysis: Analysis[ConfigT, Any], config: ConfigT | None = None, **options: Any) -> ConfigT: ...
@overload
def make_config(analysis: str, config: Any = None, **options: Any) -> Any: ...
def make_config(analysis: str | Analysis[Any, Any], config: Any = None, **options: Any) -> Any:
    """The analysis' config: ``config`` (or the defaults) with ``options`` replaced."""
    spec = _spec(analysis)
    name = spec.name
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"{name} has no option(s) {unknown}; its options are {sorted(fields)}")
    options = {k: _frozen(v) for k, v in options.items()}
    if config is None:
        return spec.config_cls(**options)
    if not isinstance(config, spec.config_cls):
        raise InputError(f"{name} needs a {spec.config_cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **options)


def _device_of(model: Any) -> str:
    """Where the analysis computes: the model's device (a loaded model, a checkpoint's weights, a torch module)."""
    device = getattr(model, "device", None)
    if device is None and isinstance(model, torch.nn.Module):
        device = next(iter(model.parameters()), torch.empty(0)).device
    return str(device if device is not None else "cpu")


def _frozen(value: Any) -> Any:
    """Lists given as options (``prompts=[...]``, ``weights=[[l, r, c]]``) as tuples, nested: configs are frozen
    and hashed into the cache key."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@overload
def run_analysis(analysis: Analysis[ConfigT, ResultT], model: Any, config: ConfigT | None = None, *,
                 cache: bool | ResultCache = True, live_inputs: Mapping[str, Any] | None = None,
                 **options: Any) -> ResultT: ...
@overload
def run_analysis(analysis: str, model: Any, config: Any = None, *, cache: bool | ResultCache = True,
                 live_inputs: Mapping[str, Any] | None = None, **options: Any) -> Result: ...
def run_analysis(analysis: str | Analysis[Any, Any], model: Any, config: Any = None, *,
                 cache: bool | ResultCache = True, live_inputs: Mapping[str, Any] | None = None,
                 **options: Any) -> Result:
    """Compute ``analysis`` (an :class:`Analysis`, or a registered one's name) on ``model``, or fetch it from the
    cache. Given the Analysis itself, the result is typed as its Result class (and checked to be one).

    ``cache=False`` always recomputes and stores nothing; a :class:`ResultCache`
    uses that cache instead of the default one. ``live_inputs``: live objects handed to ``compute`` as keyword
    arguments (a loaded masked LM): no cache key can hold them, so such a run is never cached.
    """
    return run_with_key(_spec(analysis), model, config, cache=cache, live_inputs=live_inputs, **options)[0]


def run_with_key(spec: Analysis[ConfigT, ResultT], model: Any, config: ConfigT | None = None, *,
                 cache: bool | ResultCache = True, live_inputs: Mapping[str, Any] | None = None,
                 **options: Any) -> tuple[ResultT, str | None]:
    """:func:`run_analysis` of an :class:`Analysis`, and the cache key its result is filed under (None when it
    was not cached): what a report records to be rebuilt from the cache alone (``report/plan.py``)."""
    name = spec.name
    config = make_config(spec, config, **options)
    if isinstance(model, HookedModel):  # nothing is computed on a decomposition this model did not verify
        model.require_identities(spec.needs, spec.title)
    if spec.prepare is not None:
        config = spec.prepare(model, config)
    prepared: Any = config

    def compute() -> ResultT:
        with sized_threads() as threads:  # only the cores other processes leave free (see workbench/_threads.py)
            log.info("%s on %s: device %s, %d CPU threads", name, getattr(model, "name", type(model).__name__),
                     _device_of(model), threads)
            return spec.compute(model, prepared, **(live_inputs or {}))

    if cache is False or live_inputs:
        return compute(), None
    store = cache if isinstance(cache, ResultCache) else get_cache()
    # a loaded model verifies its weights' contents too (edits through .data); trained demo models, sources, ... do not need to
    fingerprint = model.fingerprint(verify=True) if isinstance(model, HookedModel) else model.fingerprint()
    key = cache_key(name, config, fingerprint, spec.version)
    result = store.get_or_compute(key, compute, name)
    if not isinstance(result, spec.result_cls):  # a cache entry is read back by its recorded analysis name
        raise CacheCorruptError(f"{name}: the cache returned a {type(result).__name__}, not a {spec.result_cls.__name__}")
    return result, key
