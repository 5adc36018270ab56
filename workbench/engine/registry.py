"""The explicit analysis registry: name -> how to configure, run and reload an analysis."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import InputError
from ..results import Result

ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT", bound=Result)


@dataclass(frozen=True)
class Analysis(Generic[ConfigT, ResultT]):
    """One registered analysis, typed by its config and its Result class: ``run_analysis(ANALYSIS, model)``
    returns a ``ResultT``.

    ``compute(model, config)`` does the work and returns a ``result_cls``; it is only
    ever called through the cache (see :func:`workbench.analyses.run_analysis`).
    ``in_report``: whether ``workbench report`` runs it with its default config on the
    report's model (experiments that need a choice from the user say no); ``report_subject(model)``,
    when set, gives what the report runs it on instead (e.g. a demo model the analysis needs).
    ``version``: bump it when a change of the code changes results, so cached ones are not reused.
    ``prepare(model, config)``, when set, returns the config with its defaults and derived fields filled in
    (a digest of an input file, a default chosen from the model) and checked. It runs before the cache key
    is made, so equal work always gets one key and the result records the config it was computed with.
    ``title`` is the Result class's (written once, there); passing it is only accepted when it agrees.
    ``needs``: the identities of the load-time self-check (:mod:`workbench.models.selfcheck`) the computation
    relies on; on a loaded model where one failed, the analysis refuses before computing anything. An identity
    the model has no layer for (``experts`` on a dense model) is not needed there.
    """

    name: str
    description: str
    config_cls: type[ConfigT]
    result_cls: type[ResultT]
    compute: Callable[..., ResultT]
    in_report: bool = True
    version: int = 1
    report_subject: Callable[[Any], Any] | None = None
    prepare: Callable[[Any, ConfigT], ConfigT] | None = None
    title: str = ""
    needs: tuple[str, ...] = ("logits",)

    def __post_init__(self) -> None:
        if self.title and self.title != self.result_cls.title:
            raise ValueError(f"{self.name}: the title is {self.result_cls.__name__}.title, not {self.title!r}")
        object.__setattr__(self, "title", self.result_cls.title)


_REGISTRY: dict[str, Analysis[Any, Any]] = {}
_BUILT_INS = False  # whether the package's own analyses have been imported (they register themselves)


def _built_ins() -> None:
    """Import the package's analyses (once), so that they are registered, and first, whatever was imported before:
    ``import workbench`` no longer imports them (its API loads on first use), and this module cannot import them by
    name (they import it)."""
    global _BUILT_INS
    if not _BUILT_INS:
        _BUILT_INS = True
        importlib.import_module(__name__.rsplit(".", 2)[0] + ".analyses")


def register_analysis(analysis: Analysis[ConfigT, ResultT]) -> Analysis[ConfigT, ResultT]:
    """Add an analysis; registering a name twice is an error, not a silent override."""
    _built_ins()
    if analysis.name in _REGISTRY:
        raise ValueError(f"analysis {analysis.name!r} is already registered")
    if analysis.result_cls.analysis != analysis.name:
        raise ValueError(f"{analysis.result_cls.__name__}.analysis must be {analysis.name!r}")
    if analysis.result_cls.config_cls is not analysis.config_cls:  # Result.load rebuilds the config from it
        raise ValueError(f"{analysis.result_cls.__name__}.config_cls must be {analysis.config_cls.__name__}")
    _REGISTRY[analysis.name] = analysis
    return analysis


def get_analysis(name: str) -> Analysis[Any, Any]:
    _built_ins()
    if name not in _REGISTRY:
        raise InputError(f"unknown analysis {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_analyses() -> list[Analysis[Any, Any]]:
    """Every registered analysis, in registration order (the order reports show them in)."""
    _built_ins()
    return list(_REGISTRY.values())
