"""The public function of the overview (re-exported as ``wb.model_overview``)."""

from __future__ import annotations

from ...engine.runner import run_analysis
from .card import OverviewConfig, OverviewResult


def model_overview(model, *, config: OverviewConfig | None = None, cache=True, **options) -> OverviewResult:
    """Architecture card, parameter counts and per-layer weight statistics of ``model``.

    Options: see :class:`~workbench.analyses.overview.card.OverviewConfig`. Cached by model
    fingerprint and config; ``cache=False`` recomputes.
    """
    return run_analysis("overview", model, config, cache=cache, **options)  # type: ignore[return-value]
