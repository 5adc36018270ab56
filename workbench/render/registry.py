"""How each Result type is shown: a registry keyed by type (treescope's idea), so results need not know.

A :class:`View` says which figures a result has and what HTML goes above them; :func:`figures` and
:func:`extra_html` find the view of a result by walking its type's MRO, so a subclass without a view
of its own is shown as its parent is (every Result falls back to the base view: summary and tables).
The table itself is :mod:`.view_table`; the built-in views are registered in :mod:`workbench.render.views`,
imported on the first lookup:
plotly is loaded when something is shown, not when workbench is imported.
"""

from __future__ import annotations

from typing import Any

from ..results import Result

from .view_table import _VIEWS, FigureMaker, HtmlMaker, View, register_view

__all__ = ["FigureMaker", "HtmlMaker", "View", "extra_html", "figures", "register_view", "view_of"]

_BUILTINS_LOADED = False


def view_of(result: Result) -> View:
    """The view registered for the nearest type in ``type(result).__mro__`` (the base view if none)."""
    _load_builtins()
    for cls in type(result).__mro__:
        if cls in _VIEWS:
            return _VIEWS[cls]
    return View()


def figures(result: Result) -> dict[str, Any]:
    """Named plotly figures of ``result`` ({} when its view draws none)."""
    view = view_of(result)
    return view.figures(result) if view.figures else {}


def extra_html(result: Result) -> str:
    """The escaped HTML its view shows above the figures ('' when none)."""
    view = view_of(result)
    return view.html(result) if view.html else ""


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from . import views  # noqa: F401  (registers the built-in views)
