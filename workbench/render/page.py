"""One HTML section per result, the same for the report and the notebook repr.

:func:`render_html` is a pure function of the result: same result, same bytes (figure ids are derived
from the anchor, never random). Every string that came from a model or a user is escaped here or by
the view that made it. The report wraps the sections in one page with plotly.js inlined once;
:func:`notebook_html` does the same for a notebook: the first output with figures in a kernel carries
plotly.js inline (~4.8 MB, no network), later outputs use it from the page, so an executed notebook
holds the library once however many figures it shows.
"""

from __future__ import annotations

import html
import re

from ..results import Result
from .registry import extra_html, figures

MAX_TABLE_ROWS = 200


def slug(text: str) -> str:
    """``text`` as an HTML id fragment: lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def summary_html(result: Result) -> str:
    """:meth:`Result.summary` as an escaped HTML table."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in result.summary())
    return f'<table class="wb-summary">{rows}</table>'


def figure_html(fig, div_id: str) -> str:
    """A plotly figure as a div + script that expects plotly.js already on the page."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def table_html(name: str, df) -> str:
    """A table, collapsed, its first :data:`MAX_TABLE_ROWS` rows, every cell escaped."""
    shown = df.head(MAX_TABLE_ROWS)
    note = f" (first {MAX_TABLE_ROWS} of {len(df)} rows)" if len(df) > MAX_TABLE_ROWS else f" ({len(df)} rows)"
    body = shown.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", classes="wb-table sortable", border=0)
    return f"<details><summary>Table <b>{html.escape(name)}</b>{html.escape(note)}</summary>{body}</details>"


def render_html(result: Result, *, anchor: str | None = None) -> str:
    """``result`` as one ``<section>``: title, summary, its view's HTML, figures, tables.

    ``anchor``: the section's id, also the prefix of its figures' ids (the report numbers its sections;
    default: ``wb-<analysis>``)."""
    sid = anchor or f"wb-{slug(result.analysis or 'result')}"
    parts = [f'<section id="{sid}"><h2>{html.escape(result.title)}</h2>{summary_html(result)}', extra_html(result)]
    for j, (name, fig) in enumerate(figures(result).items()):
        parts.append(f'<div class="wb-figure">{figure_html(fig, f"{sid}-fig{j}-{slug(name)}")}</div>')
    parts.extend(table_html(name, df) for name, df in result.tables.items())
    parts.append("</section>")
    return "\n".join(parts)


def plotly_loader() -> str:
    """plotly.js inline (as plotly's own ``include_plotlyjs=True``): ~4.8 MB, no network."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


# The cell whose output carries plotly.js in this kernel: (cell id or None, execution count), None before any.
_carrier: tuple[str | None, int | None] | None = None

# Shown by an output without plotly.js when the page has none (the output that carried it was cleared).
_MISSING = ('<div class="wb-plotly-missing" style="display:none;color:#b00">The figures below need plotly.js, '
            "which came with this kernel's first output with figures; that output is gone from the page. "
            "Restart the kernel and run the notebook again.</div>"
            '<script type="text/javascript">(function () { var s = document.currentScript;'
            ' if (typeof window.Plotly === "undefined" && s) { s.previousElementSibling.style.display = "block"; }'
            " })();</script>")


def _current_cell() -> tuple[str | None, int | None]:
    """(the running cell's id where the front end sends one, execution count); (None, None) outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None, None
    shell = get_ipython()
    if shell is None:
        return None, None
    kernel = getattr(shell, "kernel", None)
    parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else {}
    return (parent or {}).get("metadata", {}).get("cellId"), getattr(shell, "execution_count", None)


def _carries_plotly() -> bool:
    """Whether this output is the one to carry plotly.js: the kernel's first with figures, or a new run of the
    cell that carried it (its old output, and the library with it, is being replaced)."""
    global _carrier
    cell, run = _current_cell()
    if _carrier is None or (cell is not None and cell == _carrier[0] and run != _carrier[1]):
        _carrier = (cell, run)
        return True
    return False


def reset_notebook_plotly() -> None:
    """Forget which output carried plotly.js: the next result with figures carries it again (a new page)."""
    global _carrier
    _carrier = None


def notebook_html(result: Result) -> str:
    """What a bare result in a notebook cell shows: :func:`render_html`, preceded, when it has figures, by
    plotly.js (the kernel's first such output) or by a note that shows only if the page lacks plotly.js."""
    section = render_html(result)
    if 'class="wb-figure"' not in section:
        return section
    return (plotly_loader() if _carries_plotly() else _MISSING) + section
