"""The public function of the overview: ``__all__`` is what ``workbench`` exports from it (``wb.model_overview``)."""

from __future__ import annotations

from ...engine.runner import run_analysis
from . import card
from .card import OverviewConfig, OverviewResult

__all__ = ["model_overview"]


def model_overview(model, *, config: OverviewConfig | None = None, cache=True, **options) -> OverviewResult:
    """Architecture card, parameter counts and per-layer weight statistics of ``model``.

    Options: see :class:`~workbench.analyses.overview.card.OverviewConfig`. Cached by model
    fingerprint and config; ``cache=False`` recomputes.
    """
    return run_analysis(card.ANALYSIS, model, config, cache=cache, **options)
