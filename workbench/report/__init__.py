"""One self-contained HTML file from a list of results.

``build_report`` and ``report`` are imported from :mod:`.build` on first use, so that :mod:`.pages` (a report
written again from its rendered sections) can be imported without the results, the views and torch.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .build import build_report, report

__all__ = ["build_report", "report"]


def __getattr__(name: str):
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
