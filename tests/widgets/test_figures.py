"""``widgets._figures.replace_figure``: the widget ends up showing exactly the new figure, in one update message
that carries only what changed (the template, axes and sizes that stay are neither re-validated nor re-sent)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from workbench.render.style import apply_template, figure
from workbench.widgets._figures import figure_widget, replace_figure


def _shown(fig) -> dict:
    """The figure's traces (without their widget ids) and layout (a property set to None reads back empty)."""
    doc = fig.to_plotly_json()
    return {"data": [{k: v for k, v in t.items() if k != "uid"} for t in doc["data"]],
            "layout": {k: v for k, v in doc["layout"].items() if v != {}}}


def _as_lists(doc):
    """JSON-comparable: arrays as lists."""
    if isinstance(doc, dict):
        return {k: _as_lists(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_as_lists(v) for v in doc]
    if hasattr(doc, "tolist"):
        return _as_lists(doc.tolist())
    return doc


def _pair(title: str, ys, *, log: bool, name: str | None):
    fig = figure(title)
    fig.add_scatter(x=[0, 1, 2], y=ys, mode="lines", name=name, line=dict(width=2))
    fig.add_heatmap(z=[[1.0, math.nan], [3.0, 4.0]], showscale=False)
    if log:
        fig.update_yaxes(type="log")
    return fig


def test_the_widget_shows_the_new_figure_and_is_sent_only_the_changes():
    old = _pair("before", [1, 2, 3], log=True, name="a")
    new = _pair("after", [3, 2, 1], log=False, name=None)  # yaxis.type and the trace name go away
    widget = figure_widget(old)
    messages = []
    widget.observe(lambda change: change["new"] is not None and messages.append(change["new"]), names="_py2js_update")
    replace_figure(widget, new)
    want = _shown(new)
    want["data"][1]["z"] = [[1.0, None], [3.0, 4.0]]  # NaN travels as None (widget messages are JSON)
    assert _as_lists(_shown(widget)) == _as_lists(want)
    assert len(messages) == 1  # one Plotly.update: one redraw
    style, layout = messages[0]["style_data"], messages[0]["layout_data"]
    assert "template" not in layout and "margin" not in layout and "height" not in layout  # unchanged: not sent
    assert "title" in layout and "yaxis" in layout
    assert "mode" not in style and "showscale" not in style and "y" in style


def test_a_figure_with_other_traces_is_swapped_whole():
    widget = figure_widget(_pair("before", [1, 2, 3], log=False, name="a"))
    bars = figure("bars")
    bars.add_bar(x=[1, 2], y=[3, 4])
    replace_figure(widget, bars)
    assert [t.type for t in widget.data] == ["bar"] and widget.layout.title.text == "bars"


def test_the_template_makes_the_same_figures_as_plotly():
    from plotly.subplots import make_subplots

    def grid() -> go.Figure:
        fig = make_subplots(rows=2, cols=3, subplot_titles=[f"λ={i}" for i in range(6)], horizontal_spacing=0.02,
                            vertical_spacing=0.1)
        for i in range(6):
            fig.add_trace(go.Heatmap(z=[[i, 1], [2, 3]], showscale=False), row=i // 3 + 1, col=i % 3 + 1)
        return fig.update_xaxes(visible=False).update_yaxes(visible=False, scaleanchor="x")

    ours, theirs = grid(), grid()
    apply_template(ours).update_layout(height=300)
    theirs.update_layout(template="workbench", height=300)
    assert ours.to_json() == theirs.to_json()
    ours.layout.template.layout.font.size = 30  # the copy is the figure's own
    assert figure("x").layout.template.layout.font.size is None


def test_figure_is_what_plotly_makes_of_the_same_layout():
    ours = figure("a <b>title</b>", height=300, barmode="group")
    theirs = go.Figure()
    theirs.update_layout(template="workbench", title="a &lt;b&gt;title&lt;/b&gt;", height=300,
                         margin=dict(l=60, r=20, t=50, b=50), barmode="group")
    assert ours.to_json() == theirs.to_json()
    ours.update_layout(margin_l=10, title_font_size=20)  # and the properties set as JSON behave as plotly's own
    assert ours.layout.margin.l == 10 and ours.layout.margin.r == 20 and ours.layout.title.font.size == 20
