"""Shared figure style, and escaping for text that came from a model or a user."""

from __future__ import annotations

import copy
import functools
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


@functools.lru_cache(maxsize=8)
def _grid(rows: int, cols: int, spacing: tuple[tuple[str, float], ...]) -> tuple[dict, list, str]:
    """A ``make_subplots`` grid with numbered placeholder titles: (its layout JSON, grid reference, grid text)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{i}" for i in range(rows * cols)], **dict(spacing))
    return fig.layout.to_plotly_json(), fig._grid_ref, fig._grid_str


def subplots(rows: int, cols: int, titles: list[str], **spacing: float) -> go.Figure:
    """``make_subplots(rows=rows, cols=cols, subplot_titles=titles, **spacing)``, the same figure, with the grid
    built once per shape: make_subplots validates every axis it makes (~70 ms for a 2 x 10 grid, and an explorer
    makes one on each control change); here a copy of the grid's JSON goes in as it is, titles filled in."""
    from plotly.subplots import make_subplots

    if len(titles) != rows * cols or not all(titles):  # make_subplots leaves out empty titles: its own way
        return make_subplots(rows=rows, cols=cols, subplot_titles=titles, **spacing)
    layout, grid_ref, grid_str = _grid(rows, cols, tuple(sorted(spacing.items())))
    layout = copy.deepcopy(layout)
    for note, title in zip(layout["annotations"], titles):
        note["text"] = title
    fig = go.Figure()
    fig.layout._validate = False
    try:
        for key, value in layout.items():  # one by one: Layout.update walks every nested property (~50x slower)
            fig.layout[key] = value
    finally:
        fig.layout._validate = True
    fig.__dict__["_grid_ref"] = copy.deepcopy(grid_ref)  # where make_subplots leaves them (add_trace(row=, col=))
    fig.__dict__["_grid_str"] = grid_str
    return fig
