"""Which explorer each Result type opens: a registry keyed by type, like the figures' (render/registry.py).

Every explorer is made as ``make(result, model, **options)``: ``model`` (or None) lets it compute more
through the cached analyses, ``options`` are the explorer's own. A type without an explorer of its own
gets its parent's; every Result at least gets :class:`~workbench.widgets.generic.FiguresView`. The
built-ins are registered in :mod:`workbench.widgets.views`, imported (with ipywidgets) on first use.
"""

from __future__ import annotations

from typing import Any

from ..results import Result

from .explorer_table import _WIDGETS, WidgetMaker, register_widget

__all__ = ["WidgetMaker", "register_widget", "widget"]

_BUILTINS_LOADED = False


def widget(result: Result, model: Any = None, **options: Any) -> Any:
    """The explorer registered for the nearest type in ``type(result).__mro__``."""
    _load_builtins()
    make = next(_WIDGETS[cls] for cls in type(result).__mro__ if cls in _WIDGETS)
    return make(result, model, **options)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        from .._extras import require

        require("ipywidgets", "the explorers (Result.widget())")  # the `lab` extra
        require("anywidget", "the explorers' figures (plotly's FigureWidget)")
        from . import views  # noqa: F401  (registers the built-in explorers)

        _BUILTINS_LOADED = True
