"""Figures for the model overview."""

from __future__ import annotations

import plotly.graph_objects as go

from .style import MATRIX_COLORS, figure, plot_text
from ..analyses.overview.card import OverviewResult

METRICS = {
    "frobenius": ("Frobenius norm per layer", "Frobenius norm", "linear"),
    "outlier_ratio": ("Largest weight per layer (max |w| / RMS)", "max |w| / RMS", "log"),
    "effective_rank": ("Effective rank per layer (exp spectral entropy)", "effective rank", "linear"),
    "stable_rank": ("Stable rank per layer (‖W‖_F² / σ_max²)", "stable rank", "log"),
    "sigma_max": ("Spectral norm per layer (σ_max)", "σ_max", "log"),
}


def parameters_figure(result: OverviewResult) -> go.Figure:
    table = result.parameters
    fig = figure(f"Parameters of {result.model_id}: {table['parameters'].sum():,}")
    fig.add_bar(x=table["component"], y=table["parameters"], text=[f"{s:.1%}" for s in table["share"]],
                marker_color="#4c78a8", hovertemplate="%{x}: %{y:,} parameters<extra></extra>")
    fig.update_yaxes(title="parameters")
    return fig


def metric_figure(result: OverviewResult, metric: str, *, highlight_layer: int | None = None) -> go.Figure:
    title, axis, scale = METRICS[metric]
    table = result.matrix_stats
    fig = figure(title)
    for matrix, rows in table.groupby("matrix", sort=False):
        fig.add_scatter(x=rows["layer"], y=rows[metric], mode="lines+markers", name=matrix,
                        line_color=MATRIX_COLORS.get(matrix), hovertemplate=f"{matrix} layer %{{x}}: %{{y:.4g}}<extra></extra>")
    if highlight_layer is not None:
        fig.add_vline(x=highlight_layer, line_dash="dot", line_color="grey")
    n_layers = int(table["layer"].max()) + 1
    fig.update_xaxes(title="layer", tick0=0, dtick=max(1, n_layers // 15))  # whole layers only
    fig.update_yaxes(title=axis, type=scale)
    return fig


def spectrum_figure(result: OverviewResult, layer: int, matrices: list[str] | None = None) -> go.Figure:
    fig = figure(f"Singular values, layer {layer}")
    for matrix in matrices or result.matrices:
        if layer not in result.layers_with(matrix):
            continue  # a dense matrix of a mixture-of-experts layer, or the other way round
        sv = result.spectrum(matrix, layer)
        fig.add_scatter(y=sv.tolist(), mode="lines", name=matrix, line_color=MATRIX_COLORS.get(matrix),
                        hovertemplate=f"{matrix} σ_%{{x}} = %{{y:.4g}}<extra></extra>")
    fig.update_xaxes(title="index")
    fig.update_yaxes(title="singular value", type="log")
    return fig


def embedding_figure(result: OverviewResult) -> go.Figure:
    fig = figure("Token embedding norms")
    fig.add_histogram(x=result.embedding_norms.tolist(), nbinsx=80, marker_color="#4c78a8")
    fig.update_xaxes(title="‖embedding‖₂")
    fig.update_yaxes(title="tokens", type="log")
    return fig


def overview_figures(result: OverviewResult) -> dict[str, go.Figure]:
    return {
        "parameters": parameters_figure(result),
        "outliers": metric_figure(result, "outlier_ratio"),
        "norms": metric_figure(result, "frobenius"),
        "effective_rank": metric_figure(result, "effective_rank"),
        "spectrum": spectrum_figure(result, 0),
        "embeddings": embedding_figure(result),
    }


def tokens_html(result: OverviewResult) -> str:
    """The sample text split into tokens, whitespace made visible, every token escaped."""
    cells = "".join(
        f'<span class="wb-token" title="id {row.id}">{plot_text(row.token).replace(" ", "·").replace(chr(10), "↵")}</span>'
        for row in result.sample_tokens.itertuples()
    )
    return f'<p>Sample text: <q>{plot_text(result.sample_text)}</q></p><div class="wb-tokens">{cells}</div>'
