"""A checkpoint series (``wb.distributed.over_checkpoints``): each summary number across training steps."""

from __future__ import annotations

import plotly.graph_objects as go

from .style import figure, plot_text


def series_figures(result) -> dict[str, go.Figure]:
    """One figure: every summary number of the series against the training step, a line each."""
    table = result.summary_table
    fig = figure(f"{result.config.analysis} across {len(table)} checkpoints")
    for metric in result.metrics:
        fig.add_scatter(x=table["step"], y=table[metric], mode="lines+markers", name=plot_text(metric),
                        text=[plot_text(c) for c in table["checkpoint"]],
                        hovertemplate=f"{plot_text(metric)}: %{{y:.4g}}<br>%{{text}} (step %{{x}})<extra></extra>")
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title="value")
    return {"across checkpoints": fig}
