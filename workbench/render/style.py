"""Shared figure style, and escaping for text that came from a model or a user."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "workbench"
# plotly_white's look, with trace defaults only for the trace types we draw: building a figure
# takes half the time (explorers rebuild figures on every control change) and each figure in a
# report carries half the template JSON.
_WHITE = pio.templates["plotly_white"]
pio.templates[TEMPLATE] = go.layout.Template(
    layout=_WHITE.layout, data={kind: getattr(_WHITE.data, kind) for kind in ("bar", "heatmap", "histogram", "scatter")}
)
MATRIX_COLORS = {
    "W_Q": "#1f77b4", "W_K": "#17becf", "W_V": "#2ca02c", "W_O": "#9467bd",
    "W_in": "#ff7f0e", "W_gate": "#d62728", "W_out": "#8c564b",
}


def plot_text(text: str) -> str:
    """Escape model or user text for plotly labels, which interpret a subset of HTML."""
    return html.escape(str(text), quote=False)


def figure(title: str, *, height: int = 380, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=plot_text(title), height=height, margin=dict(l=60, r=20, t=50, b=50), **layout)
    return fig
