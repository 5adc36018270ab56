"""The table of views, Result type -> :class:`View` (filled by :func:`register_view`; looked up in :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..results import Result

FigureMaker = Callable[[Any], dict[str, Any]]
HtmlMaker = Callable[[Any], str]


@dataclass(frozen=True)
class View:
    """``figures(result)``: named plotly figures; ``html(result)``: escaped HTML shown above them (report
    section and notebook repr alike)."""

    figures: FigureMaker | None = None
    html: HtmlMaker | None = None


_VIEWS: dict[type, View] = {}


def register_view(result_type: type[Result], *, figures: FigureMaker | None = None,
                  html: HtmlMaker | None = None) -> View:
    """Show results of ``result_type`` (and its subclasses without a view) with these functions; registering
    a type twice is an error, not a silent override."""
    if result_type in _VIEWS:
        raise ValueError(f"a view of {result_type.__qualname__} is already registered")
    view = _VIEWS[result_type] = View(figures=figures, html=html)
    return view
