"""Bilinear spectrum results -> plotly figures (pure functions: no model access, no recomputation)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import apply_template, figure, plot_text
from ..analyses.bilinear.replacement import BilinearReplacementResult
from ..analyses.bilinear.spectrum import BilinearSpectrumResult
from ..analyses.bilinear.training import TrainedBilinear

POSITIVE, NEGATIVE = "#1f77b4", "#d62728"


def _title(result: BilinearSpectrumResult, text: str) -> str:
    """Figure title; a replacement's fidelity goes under every title, so no number is read without it."""
    note = result.approximation_note()
    return plot_text(text) + (f"<br><sup>{plot_text(note)}</sup>" if note else "")


def _titled(result: BilinearSpectrumResult, text: str, **layout) -> go.Figure:
    fig = figure("", **layout)
    fig.update_layout(title=_title(result, text))
    return fig


def spectrum_figure(result: BilinearSpectrumResult, direction: str | int | None = None) -> go.Figure:
    """Eigenvalues against their rank (descending) for every direction; ``direction`` is drawn bold."""
    names = result.direction_names
    chosen = None if direction is None else result.index(direction)
    lam = result.eigenvalues.numpy()  # [k, r]
    fig = _titled(result, "Interaction-matrix eigenvalues per output direction", height=380)
    for j, name in enumerate(names):
        bold = chosen is None or j == chosen
        fig.add_trace(go.Scatter(
            x=np.arange(1, lam.shape[1] + 1), y=lam[j], mode="lines", name=plot_text(name),
            line=dict(width=2.5 if bold and chosen is not None else 1.2), opacity=1.0 if bold else 0.25,
            hovertemplate="rank %{x}<br>λ = %{y:.4g}<extra>" + plot_text(name) + "</extra>",
        ))
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    fig.update_xaxes(title="eigenvalue rank (descending λ)")
    fig.update_yaxes(title="eigenvalue λ")
    return fig


def _image(vec: np.ndarray, shape) -> np.ndarray:
    h, w = shape
    return vec[: h * w].reshape(h, w)


def _signed(v: np.ndarray) -> np.ndarray:
    """An eigenvector with its peak positive (its sign is arbitrary)."""
    return v * np.sign(v[np.abs(v).argmax()])


def image_grid(images: list[np.ndarray], titles: list[str], cols: int, height: int, title: str) -> go.Figure:
    """Images (each on its own colour scale, symmetric about 0: red −, blue +) in a grid of ``cols`` columns,
    drawn as one heat map with a blank pixel between images and titles in the blank rows above them.

    One trace on one pair of axes, not a subplot per image: plotly redraws a figure whole whenever its data
    change, and a subplot grid's axes are most of that work (12 subplots took ~150 ms of the browser's time on
    every change of the explorer's direction). The hover shows each image's own value."""
    h, w = images[0].shape
    rows = -(-len(images) // cols)
    top = 2  # blank pixel rows above each image row: its titles go there
    z = np.full((rows * (h + top), cols * (w + 1) - 1), np.nan)
    raw = np.full_like(z, np.nan)
    notes = []
    for b, img in enumerate(images):
        r, c = divmod(b, cols)
        y0, x0 = r * (h + top) + top, c * (w + 1)
        lim = float(np.nanmax(np.abs(img))) or 1.0
        z[y0:y0 + h, x0:x0 + w] = img / lim
        raw[y0:y0 + h, x0:x0 + w] = img
        notes.append(dict(x=x0 + (w - 1) / 2, y=len(z) - y0 - 0.5, text=titles[b], showarrow=False, yanchor="bottom",
                          font=dict(size=11)))
    flip = z[::-1]  # heat maps count rows upwards; images downwards
    fig = go.Figure(go.Heatmap(
        z=flip, customdata=raw[::-1], colorscale="RdBu", zmid=0, zmin=-1, zmax=1, showscale=False, hoverongaps=False,
        hovertemplate="%{customdata:.3f}<extra></extra>"))
    fig.update_xaxes(visible=False, range=[-0.5, z.shape[1] - 0.5])
    fig.update_yaxes(visible=False, scaleanchor="x", range=[-0.5, z.shape[0] - 0.5])
    apply_template(fig).update_layout(height=height, margin=dict(l=20, r=20, t=80, b=10), title=title, annotations=notes)
    return fig


def eigenvector_figure(result: BilinearSpectrumResult, direction: str | int = 0, n: int | None = None) -> go.Figure:
    """The top positive and top negative eigenvectors of one direction: images for image models, else
    their eigenvalues labelled with what each eigenvector reads (tokens or input coordinates)."""
    j = result.index(direction)
    name = result.direction_names[j]
    n_top = result.n_top
    n = min(n or n_top, n_top)
    vals = result.top_values[j].numpy()  # [2 n_top]
    vecs = result.top_vectors[j].numpy()  # [2 n_top, d]
    shape = result.image_shape
    picks = [(i, "+") for i in range(n)] + [(n_top + i, "−") for i in range(n)]
    if shape:
        return image_grid([_image(_signed(vecs[i]), shape) for i, _ in picks], [f"λ={vals[i]:+.3g}" for i, _ in picks],
                          n, 330, _title(result, f"Top positive (row 1) and negative (row 2) eigenvectors: {name}"))
    table = result.eigenvector_table
    rows = table[table.direction == name]
    rows = rows[rows["rank"].abs() <= n]
    labels = [f"{'+' if r > 0 else '−'}{abs(r)}" for r in rows["rank"]]
    fig = _titled(result, f"Top eigenvectors of {name}: what each reads", height=120 + 32 * len(rows))
    fig.add_trace(go.Bar(
        y=labels, x=rows["eigenvalue"], orientation="h",
        marker_color=[POSITIVE if v > 0 else NEGATIVE for v in rows["eigenvalue"]],
        text=[plot_text(t) for t in rows["reads"]], textposition="auto",
        hovertemplate="λ = %{x:.4g}<br>%{text}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="eigenvector")
    fig.update_xaxes(title="eigenvalue λ")
    return fig


def class_eigenvectors_figure(result: BilinearSpectrumResult) -> go.Figure:
    """Image models: the top positive and top negative eigenvector of every class (the paper's overview figure)."""
    shape = result.image_shape
    names = result.direction_names
    n_top = result.n_top
    vals = result.top_values.numpy()
    vecs = result.top_vectors.numpy()
    k = len(names)
    images = [_image(_signed(vecs[j, idx]), shape) for idx in (0, n_top) for j in range(k)]
    titles = [f"{plot_text(names[j])}: {vals[j, 0]:+.2f}" for j in range(k)] + [f"{vals[j, n_top]:+.2f}" for j in range(k)]
    return image_grid(images, titles, k, 300, _title(result, "Top positive (row 1) and top negative (row 2) eigenvector per class"))


def contributions_figure(result: BilinearSpectrumResult, input_index: int = 0, direction: str | int = 0) -> go.Figure:
    """lambda_i (v_i^T x)^2 of the kept eigenvectors (and the rest) for one stored input and direction."""
    j = result.index(direction)
    name = result.direction_names[j]
    n_top = result.n_top
    contrib = result.contributions[input_index, j].numpy()  # [2 n_top + 1]
    total = float(result.outputs[input_index, j])
    labels = [f"+{i + 1}" for i in range(n_top)] + [f"−{i + 1}" for i in range(n_top)] + ["rest"]
    label = result.input_table["label"].iloc[input_index]
    fig = _titled(result, f"Contributions λᵢ(vᵢ·x)² to {name} for input: {label}", height=360)
    fig.add_trace(go.Bar(x=labels, y=contrib, marker_color=[POSITIVE if c >= 0 else NEGATIVE for c in contrib],
                         hovertemplate="%{x}: %{y:.4g}<extra></extra>", name="contribution"))
    fig.add_hline(y=total, line=dict(color="#444", dash="dash"), annotation_text=f"output xᵀQx = {total:.4g}")
    fig.update_xaxes(title="eigenvector (+: positive λ, −: negative λ, by rank)")
    fig.update_yaxes(title="contribution")
    return fig


def input_image_figure(result: BilinearSpectrumResult, input_index: int = 0) -> go.Figure:
    """The stored input as an image (image models only)."""
    shape = result.image_shape
    x = result.inputs[input_index].numpy()
    fig = figure(f"input: {result.input_table['label'].iloc[input_index]}", height=260, width=260)
    fig.add_trace(go.Heatmap(z=_image(x, shape)[::-1], colorscale="Greys", showscale=False))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def truncation_figure(result: BilinearSpectrumResult, direction: str | int | None = None) -> go.Figure:
    """The truncation curve: the metric with only the k largest-|λ| eigenvectors per direction kept.

    Classifiers: accuracy (all classes truncated together). Otherwise: variance of each direction's
    output explained (thin lines; ``direction`` bold) and their mean (black).
    """
    table = result.truncation
    table = table[table.k > 0]  # log axis; k = 0 is 'no eigenvectors', in the table
    metric = result.truncation_metric
    accuracy = "accuracy" in metric
    fig = _titled(result, f"Truncation: {metric}", height=380)
    chosen = None if direction is None else result.direction_names[result.index(direction)]
    for name, rows in table.groupby("direction", sort=False):
        is_all = name == "all"
        if accuracy and not is_all:
            continue  # per-class rows hold variance explained, a different scale: see the table
        bold = is_all or name == chosen
        fig.add_trace(go.Scatter(
            x=rows["k"], y=rows["value"], mode="lines+markers" if bold else "lines",
            name="mean" if is_all and not accuracy else "accuracy" if is_all else plot_text(name),
            line=dict(width=3 if bold else 1, color="#222" if is_all else None), opacity=1.0 if bold else 0.35,
            hovertemplate="k = %{x}<br>%{y:.3f}<extra>" + plot_text(name) + "</extra>",
        ))
    fig.update_xaxes(title="eigenvectors kept per direction (largest |λ| first)", type="log")
    low = 0 if accuracy else max(-1.0, float(table["value"].min()) - 0.05)
    fig.update_yaxes(title="test accuracy" if accuracy else "variance explained", range=[low, 1.02])
    return fig


def effective_rank_figure(result: BilinearSpectrumResult) -> go.Figure:
    table = result.direction_table
    fig = _titled(result, "Effective rank of each interaction matrix (exp entropy of |λ|)", height=320)
    fig.add_trace(go.Bar(x=[plot_text(d) for d in table["direction"]], y=table["effective_rank"],
                         hovertemplate="%{x}: %{y:.1f}<extra></extra>"))
    fig.update_yaxes(title="effective rank")
    return fig


def fidelity_figure(result: BilinearReplacementResult) -> go.Figure:
    """Replacement only: the model's loss original / with the replacement / with the MLP mean-ablated."""
    a = result.approximation
    fig = _titled(result, "Next-token loss on held-out text", height=320)
    names = ["original", "bilinear replacement", "MLP mean-ablated"]
    vals = [a["loss_original"], a["loss_replaced"], a["loss_mean_ablated"]]
    fig.add_trace(go.Bar(x=names, y=vals, text=[f"{v:.3f}" for v in vals], textposition="outside",
                         marker_color=["#2ca02c", POSITIVE, "#999"]))
    fig.update_yaxes(title="cross-entropy (nats / token)", range=[min(vals) * 0.97, max(vals) * 1.02])
    return fig


def spectrum_figures(result: BilinearSpectrumResult) -> dict[str, go.Figure]:
    figs = {"spectrum": spectrum_figure(result)}
    if result.image_shape:
        figs["class eigenvectors"] = class_eigenvectors_figure(result)
    else:
        figs["eigenvectors"] = eigenvector_figure(result, 0)
    figs["truncation"] = truncation_figure(result)
    figs["effective rank"] = effective_rank_figure(result)
    figs["contributions"] = contributions_figure(result, 0, 0)
    return figs


def replacement_figures(result: BilinearReplacementResult) -> dict[str, go.Figure]:
    """A bilinear replacement's: its fidelity first, then the spectrum's figures."""
    return {"fidelity": fidelity_figure(result), **spectrum_figures(result)}


def history_figure(trained: TrainedBilinear) -> go.Figure:
    """Training curve of a :class:`~workbench.analyses.bilinear.TrainedBilinear`."""
    h = trained.history
    x = "epoch" if "epoch" in h else "step"
    fig = figure(f"Training: {trained.name}", height=320)
    for col in h.columns:
        if col != x:
            fig.add_trace(go.Scatter(x=h[x], y=h[col], mode="lines", name=col))
    fig.update_xaxes(title=x)
    return fig


def training_figures(trained: TrainedBilinear) -> dict[str, go.Figure]:
    return {"training": history_figure(trained)}
