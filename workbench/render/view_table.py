"""The table of views, Result type -> :class:`View` (filled by :func:`register_view`; looked up in :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..results import Result

ResultT = TypeVar("ResultT", bound=Result)
FigureMaker = Callable[[Any], dict[str, Any]]
HtmlMaker = Callable[[Any], str]


@dataclass(frozen=True)
class View:
    """``figures(result)``: named plotly figures; ``html(result)``: escaped HTML shown above them (report
    section and notebook repr alike)."""

    figures: FigureMaker | None = None
    html: HtmlMaker | None = None


_VIEWS: dict[type, View] = {}


def register_view(result_type: type[ResultT], *, figures: Callable[[ResultT], dict[str, Any]] | None = None,
                  html: Callable[[ResultT], str] | None = None) -> View:
    """Show results of ``result_type`` (and its subclasses without a view) with these functions, typed by the
    Result they show (mypy checks each view against the accessors it reads); registering a type twice is an
    error, not a silent override."""
    if result_type in _VIEWS:
        raise ValueError(f"a view of {result_type.__qualname__} is already registered")
    view = _VIEWS[result_type] = View(figures=figures, html=html)
    return view
