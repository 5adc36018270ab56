"""Figures for attention-head composition, measured effects and the Laundry List task.

Pure functions of results: no model access, no recomputation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import figure, plot_text
from ..analyses.heads.composition import HeadCompositionResult
from ..analyses.heads.effects import HeadEffectsResult
from ..analyses.heads.laundry import LaundryListResult
from ..analyses.heads.laundry_scan import LaundryScanResult

KIND_NAMES = {"Q": "Q-composition (writer → reader queries)", "K": "K-composition (writer → reader keys)",
              "V": "V-composition (writer → reader values)"}
KIND_COLORS = {"Q": "#1f77b4", "K": "#17becf", "V": "#2ca02c"}
SCALE = "Viridis"


def _r(values, digits: int = 4):
    """Round and store as float32 for the page: plotly ships arrays as binary, float64 would double
    the size of a 270 x 270 x 3 heat map in a report."""
    return np.round(np.asarray(values, dtype=float), digits).astype(np.float32)


# ------------------------------------------------------------------ composition
def layer_heatmap(result: HeadCompositionResult, kind: str) -> go.Figure:
    """Writer layer x reader layer: the largest whole-head score over head pairs."""
    m = result.layer_matrix(kind)
    fig = figure(f"{KIND_NAMES[kind]}: max over head pairs", height=460)
    fig.add_heatmap(z=_r(m), x=result.reader_layers, y=result.writer_layers, colorscale=SCALE,
                    colorbar_title="score", hovertemplate="writer L%{y} → reader L%{x}: %{z:.3f}<extra></extra>")
    fig.update_xaxes(title="reader layer")
    fig.update_yaxes(title="writer layer", autorange="reversed")
    return fig


def head_matrix(result: HeadCompositionResult, kind: str) -> tuple[np.ndarray, list[str], list[str]]:
    """[writer heads, reader heads] whole-head scores (NaN where the reader is not later) and labels."""
    head = result.head_scores(kind).numpy().astype(float)  # [wl, wh, rl, rh]
    wl, rl = np.array(result.writer_layers), np.array(result.reader_layers)
    head = np.where((wl[:, None, None, None] < rl[None, None, :, None]), head, np.nan)
    writers = [f"L{l}H{h}" for l in result.writer_layers for h in result.writer_heads]
    readers = [f"L{l}H{h}" for l in result.reader_layers for h in result.reader_heads]
    return head.reshape(head.shape[0] * head.shape[1], -1), writers, readers


def head_heatmap(result: HeadCompositionResult, kind: str) -> go.Figure:
    """Writer head x reader head whole-head scores; click a cell in the widget for its breakdown."""
    z, ylab, xlab = head_matrix(result, kind)
    fig = figure(f"{KIND_NAMES[kind]}: head × head", height=620)
    fig.add_heatmap(z=_r(z, 3), x=xlab, y=ylab, colorscale=SCALE, colorbar_title="score",
                    hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>")
    fig.update_xaxes(title="reader head", showticklabels=len(xlab) <= 60)
    fig.update_yaxes(title="writer head", autorange="reversed", showticklabels=len(ylab) <= 60)
    return fig


def kind_switcher(figs: dict[str, go.Figure], title: str) -> go.Figure:
    """One figure holding a trace per kind, with buttons to switch: a kind selector that works offline."""
    kinds = list(figs)
    fig = go.Figure(layout=figs[kinds[0]].layout)
    for i, kind in enumerate(kinds):
        trace = figs[kind].data[0]
        trace.visible = i == 0
        fig.add_trace(trace)
    buttons = [dict(label=k, method="update", args=[{"visible": [j == i for j in range(len(kinds))]},
                                                     {"title.text": plot_text(f"{KIND_NAMES[k]}{title}")}])
               for i, k in enumerate(kinds)]
    fig.update_layout(updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=1.0, y=1.12,
                                        xanchor="right", showactive=True)])
    return fig


def breakdown_figure(result: HeadCompositionResult, writer: tuple[int, int], reader: tuple[int, int], kind: str) -> go.Figure:
    """Per writer component: share of the pair's ||OV_A R_B||² (bars) and component score (line)."""
    df = result.breakdown(writer, reader, kind)
    fig = figure(f"L{writer[0]}H{writer[1]} → L{reader[0]}H{reader[1]} ({kind}): per OV component", height=360)
    fig.add_bar(x=df.component, y=_r(df.share), name="share of composition", marker_color=KIND_COLORS[kind],
                hovertemplate="component %{x}: %{y:.1%} of ‖OV R‖²<extra></extra>")
    fig.add_scatter(x=df.component, y=_r(df.score), name="component score", yaxis="y2", mode="lines+markers",
                    line_color="#d62728", hovertemplate="component %{x}: score %{y:.3f}<extra></extra>")
    null = _null_component_q99(result, kind)
    if null is not None:
        fig.add_scatter(x=[df.component.min(), df.component.max()], y=[null, null], yaxis="y2", mode="lines",
                        name="null q99 (component)", line=dict(color="grey", dash="dot"))
    fig.update_layout(yaxis=dict(title="share", tickformat=".0%"),
                      yaxis2=dict(title="score", overlaying="y", side="right", rangemode="tozero"),
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title="writer OV component (by singular value)")
    return fig


def _null_component_q99(result: HeadCompositionResult, kind: str) -> float | None:
    t = result.null_quantiles
    row = t[(t.null == "gaussian") & (t.kind == kind) & (t.level == "component")]
    return None if row.empty else float(row.q99.iloc[0])


def spectra_figure(result: HeadCompositionResult, heads: list[tuple[int, int]]) -> go.Figure:
    """OV (solid) and QK (dotted) singular values of the given heads."""
    fig = figure("Singular spectra", height=340)
    for layer, head in heads:
        for circuit, dash in (("OV", "solid"), ("QK", "dot")):
            s = result.singular_values(circuit)[layer, head]
            fig.add_scatter(y=_r(s), mode="lines", name=f"L{layer}H{head} {circuit}", line_dash=dash,
                            hovertemplate=f"L{layer}H{head} {circuit} σ_%{{x}} = %{{y:.4g}}<extra></extra>")
    fig.update_xaxes(title="component")
    fig.update_yaxes(title="singular value", type="log")
    return fig


def effective_rank_figure(result: HeadCompositionResult) -> go.Figure:
    """Effective rank (exp spectral entropy) of every head's OV and QK circuit, by layer."""
    t = result.spectra
    fig = figure("Effective rank of each head's circuits", height=340)
    for circuit, rows in t.groupby("circuit", sort=False):
        fig.add_scatter(x=rows.layer + rows["head"] / (rows["head"].max() + 1), y=_r(rows.effective_rank, 2),
                        mode="markers", name=circuit, text=[f"L{l}H{h}" for l, h in zip(rows.layer, rows["head"])],
                        hovertemplate="%{text}: %{y:.1f}<extra>" + circuit + "</extra>")
    fig.update_xaxes(title="layer (heads spread within)")
    fig.update_yaxes(title="effective rank")
    return fig


def null_figure(result: HeadCompositionResult, bins: int = 60) -> go.Figure:
    """Whole-head scores of the model's pairs against scores of random matrices (same shapes/norms).

    Histograms are binned here (densities on shared bins), so the page carries 60 bars, not every score."""
    fig = figure("Scores vs random-matrix null", height=340, barmode="overlay")
    pairs = result.pairs
    drawn = {(kind, rotated): result.null_scores(kind, rotated=rotated) for kind in result.kinds for rotated in (False, True)}
    nulls = {key: scores.numpy() for key, scores in drawn.items() if scores is not None}  # (kind, rotated) -> scores
    top = max([float(pairs.score.max()) if len(pairs) else 0.0] + [float(n.max()) for n in nulls.values()])
    edges = np.linspace(0.0, top * 1.001 + 1e-12, bins + 1)
    centers, width = (edges[1:] + edges[:-1]) / 2, edges[1] - edges[0]
    for kind in result.kinds:
        series = [("model", pairs[pairs.kind == kind].score.to_numpy(), KIND_COLORS[kind], 0.6)]
        if (kind, False) in nulls:
            series.append(("Gaussian null", nulls[kind, False], "grey", 0.4))
        if (kind, True) in nulls:
            series.append(("rotated null", nulls[kind, True], "#ff7f0e", 0.4))
        for label, values, color, opacity in series:
            density, _ = np.histogram(values, bins=edges, density=True)
            keep = density > 0
            fig.add_bar(x=_r(centers[keep]), y=_r(density[keep], 3), width=width, name=f"{kind} {label}",
                        marker_color=color, opacity=opacity,
                        hovertemplate=f"{kind} {label}: score %{{x:.3f}}, density %{{y:.3g}}<extra></extra>")
    fig.update_xaxes(title="whole-head composition score")
    fig.update_yaxes(title="density", type="log")
    return fig


def top_pair(result: HeadCompositionResult, kind: str | None = None) -> tuple[tuple[int, int], tuple[int, int], str] | None:
    pairs = result.pairs
    if kind is not None:
        pairs = pairs[pairs.kind == kind]
    if pairs.empty:
        return None
    r = pairs.iloc[0]
    return (int(r.writer_layer), int(r.writer_head)), (int(r.reader_layer), int(r.reader_head)), str(r.kind)


def composition_figures(result: HeadCompositionResult) -> dict[str, go.Figure]:
    kinds = result.kinds
    figs = {"layers": kind_switcher({k: layer_heatmap(result, k) for k in kinds}, ": max over head pairs"),
            "heads": kind_switcher({k: head_heatmap(result, k) for k in kinds}, ": head × head")}
    best = top_pair(result)
    if best is not None:
        writer, reader, kind = best
        figs["top_pair"] = breakdown_figure(result, writer, reader, kind)
        figs["top_pair_spectra"] = spectra_figure(result, [writer, reader])
    figs["effective_rank"] = effective_rank_figure(result)
    if len(result.null_quantiles):
        figs["null"] = null_figure(result)
    return figs


def top_pairs_frame(result: HeadCompositionResult, kind: str | None = None, n: int = 20) -> pd.DataFrame:
    pairs = result.pairs
    return (pairs if kind is None else pairs[pairs.kind == kind]).head(n).reset_index(drop=True)


# ------------------------------------------------------------------ measured effects
def effects_figures(result: HeadEffectsResult) -> dict[str, go.Figure]:
    table, corr = result.effects, result.correlation
    figs = {}
    for kind, rows in table.groupby("kind", sort=False):
        c = corr[corr.kind == kind].set_index("level")
        fig = figure(f"{kind}: weight score vs measured effect", height=380)
        for level, sel, symbol in (("head", rows.component < 0, "circle"), ("component", rows.component >= 0, "diamond")):
            part = rows[sel]
            if part.empty:
                continue
            rho = c.spearman.get(level, float("nan"))
            labels = [f"L{a}H{b}{'' if k < 0 else f'.c{k}'} → L{d}H{e}" for a, b, k, d, e in
                      zip(part.writer_layer, part.writer_head, part.component, part.reader_layer, part.reader_head)]
            fig.add_scatter(x=_r(part.weight_score), y=_r(part.effect), mode="markers", marker_symbol=symbol,
                            name=f"{level} (Spearman {rho:.2f})", text=labels,
                            hovertemplate="%{text}<br>weight %{x:.3f}, effect %{y:.3f}<extra></extra>")
        fig.update_xaxes(title="weight-based composition score")
        fig.update_yaxes(title="measured effect" + (" (pattern TV)" if kind in "QK" else " (relative output change)"))
        figs[f"effects_{kind}"] = fig
    return figs


# ------------------------------------------------------------------ laundry list
def laundry_figure(result: LaundryListResult) -> go.Figure:
    curve = result.curve
    fig = figure("Laundry List: accuracy vs number of items", height=360)
    for cond, rows in curve.groupby("condition", sort=False):
        fig.add_scatter(x=rows.n_items, y=_r(rows.accuracy), mode="lines+markers", name=cond,
                        hovertemplate=f"{cond}: N=%{{x}} accuracy %{{y:.0%}}<extra></extra>")
    chance = curve.drop_duplicates("n_items")
    fig.add_scatter(x=chance.n_items, y=_r(chance.chance), mode="lines", name="chance (1/N)", line=dict(color="grey", dash="dot"))
    fig.update_xaxes(title="items in the list (N)")
    fig.update_yaxes(title="accuracy (target is the top listed item)", tickformat=".0%", range=[0, 1.05])
    return fig


def laundry_figures(result: LaundryListResult) -> dict[str, go.Figure]:
    return {"laundry_list": laundry_figure(result)}



def laundry_scan_figures(result: LaundryScanResult, n: int = 20) -> dict[str, go.Figure]:
    """The ``n`` components whose rescaling the scan says moves the margin most, each way."""
    table = result.components
    ends = pd.concat([table.head(n), table.tail(n)]).drop_duplicates()
    labels = [f"L{r.layer}H{r.head}.{r.component}" for r in ends.itertuples()]
    fig = figure("Laundry List scan: margin change per unit of (scale - 1)", height=max(360, 14 * len(ends)))
    fig.add_bar(x=_r(ends.d_margin), y=labels, orientation="h",
                marker_color=np.where(ends.d_margin > 0, "#2ca02c", "#d62728"),
                hovertemplate="%{y}: %{x:.4f}<extra></extra>")
    fig.update_yaxes(autorange="reversed", title="layer, head, OV component")
    fig.update_xaxes(title="d margin (positive: amplify helps; negative: removing helps)")
    return {"laundry_scan": fig}

def explanation_html(result: HeadCompositionResult) -> str:
    """How to read the section (static text plus escaped numbers)."""
    import html

    folded = "with" if result.norm_folded else "without"
    return (
        "<p>Composition score CS = ‖OV<sub>A</sub> R<sub>B</sub>‖<sub>F</sub> / (‖OV<sub>A</sub>‖<sub>F</sub> "
        "‖R<sub>B</sub>‖<sub>F</sub>) between a writer head A and a reader head B in a later layer, with "
        "R<sub>B</sub> = QK<sub>B</sub> (Q), QK<sub>B</sub><sup>T</sup> (K) or OV<sub>B</sub> (V); per component, "
        "A's OV is replaced by one rank-1 SVD component s<sub>i</sub>u<sub>i</sub>v<sub>i</sub><sup>T</sup>. "
        "<code>share</code> is the fraction of ‖OV<sub>A</sub>R<sub>B</sub>‖² carried by a component (they add to 1). "
        "<code>vs_null</code> / <code>vs_rotated</code> divide by the 99th percentile of the score for Gaussian "
        "matrices of the same shapes and norms / for real writers with randomly rotated output spaces. "
        f"Weights are read {html.escape(folded)} the pre-attention norm gain folded into W<sub>Q</sub>, "
        f"W<sub>K</sub>, W<sub>V</sub>; {result.heads_per_kv} query heads share each key/value "
        "head, and every score is per query head.</p>"
    )
