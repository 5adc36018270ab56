"""Interactive explorers: controls + figures over a Result. No maths here; they re-slice results.

Explorers are registered by Result type (:mod:`.registry`, built-ins in :mod:`.views`) and opened by
``result.widget(model=None, **options)``.
"""

from ..results import install_display
from .registry import register_widget, widget

install_display(widget=widget)  # Result.widget() opens the explorer registered for its type

__all__ = ["register_widget"]
