"""One self-contained HTML file from a list of results."""

from .build import build_report, report

__all__ = ["build_report", "report"]
