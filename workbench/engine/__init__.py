"""How analyses run: the registry (name -> :class:`Analysis`) and the runner (config, prepare, cache key, compute)."""

from .registry import Analysis, get_analysis, list_analyses, register_analysis
from .runner import make_config, run_analysis

__all__ = ["Analysis", "get_analysis", "list_analyses", "make_config", "register_analysis", "run_analysis"]
