"""Moved to :mod:`workbench.engine.registry`; kept only until ``analyses/attribution`` imports it from there."""

from ..engine.registry import Analysis, get_analysis, list_analyses, register_analysis

__all__ = ["Analysis", "get_analysis", "list_analyses", "register_analysis"]
