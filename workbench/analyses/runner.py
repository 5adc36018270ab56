"""Moved to :mod:`workbench.engine.runner`; kept only until ``analyses/attribution`` imports it from there."""

from ..engine.runner import make_config, run_analysis

__all__ = ["make_config", "run_analysis"]
