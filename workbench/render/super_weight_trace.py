"""Figures for a super-weight trace: the super activation per token, the parts of the residual
stream that drive it, and the later heads whose attention sinks on it. Pure functions."""

from __future__ import annotations

import plotly.graph_objects as go

from .style import figure, plot_text
from ..analyses.super_weights.trace import TraceResult

INTACT, ZEROED = "#1f77b4", "#d62728"
KIND_COLORS = {"head": "#2ca02c", "mlp": "#9467bd", "embeddings": "#8c564b", "bias": "#7f7f7f"}


def _weight_label(result: TraceResult) -> str:
    layer, row, col = result.weight
    return f"layer {layer}" + (f" expert {result.expert}" if result.expert >= 0 else "") + f" [{row}, {col}]"


def tokens_figure(result: TraceResult) -> go.Figure:
    """The weight's output channel in the residual stream after its layer, per token: intact vs zeroed."""
    table = result.tokens
    labels = [plot_text(f"{p}: {t!r}") for p, t in zip(table["position"], table["token"])]
    fig = figure(f"Super activation of {_weight_label(result)} per token (residual channel {result.weight[1]})")
    fig.add_bar(x=labels, y=table["resid"].abs(), name="intact", marker_color=INTACT,
                hovertemplate="%{x}: |value| %{y:.4g}<extra>intact</extra>")
    fig.add_bar(x=labels, y=table["resid_zeroed"].abs(), name="weight zeroed", marker_color=ZEROED,
                hovertemplate="%{x}: |value| %{y:.4g}<extra>zeroed</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="|residual value|", type="log")
    return fig


def drivers_figure(result: TraceResult, n: int = 15) -> go.Figure:
    """The ``n`` parts of the residual stream with the largest direct effect on the weight's input channel."""
    top = result.top_drivers(n).iloc[::-1]  # largest at the top of a horizontal bar chart
    fig = figure(f"What drives the input channel {result.weight[2]} at {result.spike_token!r} "
                 f"(position {result.spike_position})", height=max(320, 24 * len(top) + 120))
    text = [plot_text(f"{r.part}: gate {r.gate:+.3g}, up {r.up:+.3g}" + (f"; attends to {r.attends_to}" if r.attends_to else ""))
            for r in top.itertuples()]
    fig.add_bar(y=[plot_text(p) for p in top["part"]], x=top["effect"], orientation="h",
                marker_color=[KIND_COLORS.get(k, "black") for k in top["kind"]], text=text, textposition="none",
                hovertemplate="%{text}<br>activation change if removed: %{x:.4g}<extra></extra>")
    fig.update_xaxes(title=f"its share of the activation {result.input_value:.4g} (change if removed, norm held)")
    fig.update_layout(showlegend=False)
    return fig


def readers_figure(result: TraceResult) -> go.Figure:
    """Attention mass of every later head on the spike positions: change when the weight is zeroed."""
    readers = result.readers
    if readers.empty:
        return figure("No later layers read this weight's output")
    grid = readers.pivot(index="layer", columns="head", values="change")
    intact = readers.pivot(index="layer", columns="head", values="intact")
    zeroed = readers.pivot(index="layer", columns="head", values="zeroed")
    hover = [[f"L{l}H{h}: {intact.loc[l, h]:.3f} → {zeroed.loc[l, h]:.3f}" for h in grid.columns] for l in grid.index]
    fig = figure("Attention on the spike tokens, change when the weight is zeroed", height=max(320, 14 * len(grid) + 140))
    fig.add_heatmap(z=grid.to_numpy(), x=[f"H{h}" for h in grid.columns], y=list(grid.index), text=hover,
                    colorscale="RdBu", zmid=0, zmin=-1, zmax=1, colorbar_title="Δ attention",
                    hovertemplate="%{text}<extra></extra>")
    fig.update_yaxes(title="layer", autorange="reversed")
    return fig


def trace_figures(result: TraceResult) -> dict[str, go.Figure]:
    return {"tokens": tokens_figure(result), "drivers": drivers_figure(result), "readers": readers_figure(result)}
