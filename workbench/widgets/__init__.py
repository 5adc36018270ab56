"""Interactive explorers: controls + figures over a Result. No maths here; they re-slice results.

Explorers are registered by Result type (:mod:`.registry`, built-ins in :mod:`.views`) and opened by
``result.widget(model=None, **options)``.
"""

from .registry import register_widget

__all__ = ["register_widget"]
