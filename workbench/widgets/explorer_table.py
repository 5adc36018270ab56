"""The table of explorers, Result type -> widget maker (filled by :func:`register_widget`; looked up in
:mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..results import Result

ResultT = TypeVar("ResultT", bound=Result)
WidgetMaker = Callable[..., Any]

_WIDGETS: dict[type, WidgetMaker] = {}


def register_widget(result_type: type[ResultT], make: Callable[[ResultT, Any], Any]) -> WidgetMaker:
    """Open results of ``result_type`` (and subclasses without their own) with ``make(result, model, **options)``;
    registering a type twice is an error."""
    if result_type in _WIDGETS:
        raise ValueError(f"an explorer of {result_type.__qualname__} is already registered")
    _WIDGETS[result_type] = make
    return make
