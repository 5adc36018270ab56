"""Shared figure style, and escaping for text that came from a model or a user."""

from __future__ import annotations

import copy
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
# Tick labels past the figure's edge are drawn, not hidden: hiding them costs plotly a measurement of every
# label on every redraw (~15 ms of an explorer change in JupyterLab), and a label cut off helps no one.
pio.templates[TEMPLATE].layout.update(xaxis_ticklabeloverflow="allow", yaxis_ticklabeloverflow="allow")
_TEMPLATE_JSON = go.Figure(layout={"template": TEMPLATE}).layout.template.to_plotly_json()  # plotly's own order
MATRIX_COLORS = {
    "W_Q": "#1f77b4", "W_K": "#17becf", "W_V": "#2ca02c", "W_O": "#9467bd",
    "W_in": "#ff7f0e", "W_gate": "#d62728", "W_out": "#8c564b",
}


def plot_text(text: str) -> str:
    """Escape model or user text for plotly labels, which interpret a subset of HTML."""
    return html.escape(str(text), quote=False)


def _set_as_json(fig: go.Figure, props: dict) -> go.Figure:
    """Set layout properties given in plotly's own JSON form, without re-validating them (plotly's switch)."""
    layout = fig.layout
    layout._validate = False
    try:
        for key, value in props.items():
            layout[key] = value
    finally:
        layout._validate = True
    return fig


def apply_template(fig: go.Figure) -> go.Figure:
    """Give ``fig`` the workbench template: the same as ``fig.update_layout(template=TEMPLATE)``, without plotly
    deep-copying and re-validating the registered template for every figure (~10 ms each, and explorers build
    figures on every control change): a copy of its JSON, validated once when it was registered, goes in as it is;
    ``fig.layout.template`` reads back the same Template."""
    return _set_as_json(fig, {"template": copy.deepcopy(_TEMPLATE_JSON)})


def figure(title: str, *, height: int = 380, **layout) -> go.Figure:
    """An empty figure in the workbench style: template, escaped title, height, margins (set as the JSON plotly
    would make of them: ~5 ms less per figure), then ``layout`` (validated)."""
    fig = _set_as_json(go.Figure(), {"template": copy.deepcopy(_TEMPLATE_JSON), "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                                     "title": {"text": plot_text(title)}, "height": int(height)})  # plotly's order
    if layout:
        fig.update_layout(**layout)
    return fig
