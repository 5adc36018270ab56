"""One HTML section per result, the same for the report and the notebook repr.

:func:`render_html` is a pure function of the result: same result, same bytes (figure ids are derived
from the anchor, never random). Every string that came from a model or a user is escaped here or by
the view that made it. The report wraps the sections in one page with plotly.js inlined once;
:func:`notebook_html` prefixes one section with an inline plotly.js loader, so a bare result in a cell
shows its figures too, with no network (at ~4.8 MB per such output: the price of working offline
in any notebook front end).
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


def notebook_html(result: Result) -> str:
    """What a bare result in a notebook cell shows: :func:`render_html`, with plotly.js when it has figures."""
    section = render_html(result)
    return (plotly_loader() if 'class="wb-figure"' in section else "") + section
