"""Analyses: pure computations on a HookedModel, returning frozen Results. No plotting here."""

from . import overview
from .registry import Analysis, get_analysis, list_analyses, register_analysis
from .runner import make_config, run_analysis

register_analysis(overview.ANALYSIS)


def model_overview(model, config: overview.OverviewConfig | None = None, *, cache=True, **options) -> overview.OverviewResult:
    """Architecture card, parameter counts and per-layer weight statistics of ``model``.

    Options: see :class:`~workbench.analyses.overview.OverviewConfig`. Cached by model
    fingerprint and config; ``cache=False`` recomputes.
    """
    return run_analysis("overview", model, config, cache=cache, **options)


__all__ = ["Analysis", "get_analysis", "list_analyses", "make_config", "model_overview", "register_analysis", "run_analysis"]
