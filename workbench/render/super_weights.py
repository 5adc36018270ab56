"""Figures and HTML for super-weight results: spikes per layer, super-activation traces,
ablation effects, experiment quality curves and next-token distributions. Pure functions."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from .style import figure, plot_text
from ..analyses.super_weights.detect import SuperWeightResult
from ..analyses.super_weights.experiments import ExperimentResult
from ..analyses.super_weights.experts import SuperExpertResult

ROLE_COLORS = {"super weight": "#d62728", "paired spike": "#7f7f7f", "minor": "#bcbd22"}
IN_COLOR, OUT_COLOR = "#ff7f0e", "#1f77b4"


def _label(row) -> str:
    return f"layer {row.layer} [{row.row}, {row.col}]"


def spikes_figure(result: SuperWeightResult, *, highlight: int | None = None) -> go.Figure:
    """Per-layer max |MLP input| and max |MLP output| (first scan, log scale); candidates marked."""
    n = result.in_max.shape[1]
    layers = list(range(n))
    fig = figure("Largest MLP activations per layer (first scan)")
    fig.add_scatter(x=layers, y=result.in_max[0].tolist(), mode="lines+markers", name="max |input of W_out|",
                    line_color=IN_COLOR, hovertemplate="layer %{x}: max |X| = %{y:.4g}<extra></extra>")
    fig.add_scatter(x=layers, y=result.out_max[0].tolist(), mode="lines+markers", name="max |MLP output|",
                    line_color=OUT_COLOR, hovertemplate="layer %{x}: max |Y| = %{y:.4g}<extra></extra>")
    cands = result.candidates
    for role, rows in cands.groupby("role", sort=False):
        fig.add_scatter(x=rows["layer"], y=rows["out_value"].abs(), mode="markers", name=role,
                        marker=dict(color=ROLE_COLORS.get(role, "black"), size=11, symbol="diamond-open", line_width=2),
                        text=[plot_text(_label(r)) for r in rows.itertuples()],
                        hovertemplate="%{text}: |Y| = %{y:.4g}<extra>" + plot_text(role) + "</extra>")
    if highlight is not None and len(cands):
        fig.add_vline(x=int(cands["layer"].iloc[highlight]), line_dash="dot", line_color="grey")
    fig.update_xaxes(title="layer", tick0=0, dtick=max(1, n // 15))
    fig.update_yaxes(title="max |activation|", type="log")
    return fig


def strongest(result: SuperWeightResult) -> int | None:
    """Index of the candidate with the largest ablation effect (None without candidates)."""
    cands = result.candidates
    return None if cands.empty else int(cands["kl"].fillna(0).to_numpy().argmax())


def trace_figure(result: SuperWeightResult, index: int | None = None) -> go.Figure:
    """Residual max |value| in the candidate's output channel after every layer: intact vs zeroed."""
    index = strongest(result) if index is None else index
    if index is None:
        return figure("Super activation: no candidates found")
    row = result.candidates.iloc[index]
    intact, ablated = result.trace(index)
    channel = int(row["row"])
    x = list(range(-1, len(intact) - 1))  # -1 = embeddings
    fig = figure(f"Super activation: residual channel {channel} through the layers")
    fig.add_scatter(x=x, y=intact.tolist(), mode="lines+markers", name="intact", line_color="#1f77b4",
                    hovertemplate="after layer %{x}: %{y:.4g}<extra>intact</extra>")
    fig.add_scatter(x=x, y=ablated.tolist(), mode="lines+markers", name=f"without {_label(row)}", line_color="#d62728",
                    hovertemplate="after layer %{x}: %{y:.4g}<extra>zeroed</extra>")
    if result.loss_without_super is not None:
        fig.add_scatter(x=x, y=result.resid_without_super[:, channel].tolist(), mode="lines",
                        name="without all super weights", line=dict(color="#7f7f7f", dash="dash"))
    fig.update_xaxes(title="after layer (-1 = embeddings)")
    fig.update_yaxes(title=f"max |residual[{channel}]|", type="log")
    return fig


def effects_figure(result: SuperWeightResult) -> go.Figure:
    """Ablation effect (KL from the intact predictions) per candidate, with the random controls."""
    cands = result.candidates
    fig = figure("Effect of zeroing each candidate vs random weights of the same matrix")
    labels = [plot_text(_label(r)) for r in cands.itertuples()]
    fig.add_bar(x=labels, y=cands["kl"].clip(lower=1e-12), marker_color=[ROLE_COLORS.get(r, "black") for r in cands["role"]],
                customdata=cands[["delta_loss", "role"]].to_numpy(),
                hovertemplate="%{x}: KL %{y:.3g}, loss %{customdata[0]:+.4f} (%{customdata[1]})<extra></extra>", name="candidates")
    controls = result.controls
    if len(controls):
        fig.add_scatter(x=labels, y=[max(controls["kl"].max(), 1e-12)] * len(labels), mode="lines", name="largest random control",
                        line=dict(color="black", dash="dot"))
    fig.update_yaxes(title="KL(intact ‖ zeroed), nats/token", type="log")
    return fig


def detection_figures(result: SuperWeightResult) -> dict[str, go.Figure]:
    return {"spikes": spikes_figure(result), "trace": trace_figure(result), "effects": effects_figure(result)}


def super_expert_figures(result: SuperExpertResult) -> dict[str, go.Figure]:
    """Each expert's largest write (log scale) and, for the removed ones, the KL its removal costs."""
    table = result.experts
    labels = [f"L{r.layer}E{r.expert}" for r in table.itertuples()]
    colors = ["#d62728" if role == "super expert" else ("#ff7f0e" if spike else "#1f77b4")
              for role, spike in zip(table["role"], table["spike"])]
    writes = figure("Largest write of each expert into one residual channel")
    writes.add_bar(x=labels, y=table["max_write"], marker_color=colors, customdata=table[["row", "load"]],
                   hovertemplate="%{x}: %{y:.4g} in channel %{customdata[0]}, routed %{customdata[1]:.0%}<extra></extra>")
    writes.update_yaxes(title="max |write|", type="log")
    removed = table[table["kl"].notna()]
    effects = figure("Removing one expert: KL of the next-token predictions")
    effects.add_bar(x=[f"L{r.layer}E{r.expert}" for r in removed.itertuples()], y=removed["kl"],
                    marker_color=["#d62728" if r == "super expert" else "#7f7f7f" for r in removed["role"]],
                    hovertemplate="%{x}: KL %{y:.4g}<extra></extra>")
    effects.update_yaxes(title="KL (nats)", type="log")
    router = figure("Router load per expert")
    router.add_heatmap(z=table.pivot(index="layer", columns="expert", values="load").to_numpy(),
                       colorscale="Blues", hovertemplate="layer %{y}, expert %{x}: %{z:.0%} of tokens<extra></extra>")
    router.update_xaxes(title="expert")
    router.update_yaxes(title="layer")
    return {"writes": writes, "effects": effects, "router": router}


def candidates_html(result: SuperWeightResult) -> str:
    """What the candidates are, which ones are super weights, and the published comparison; all escaped.

    (The report appends every table itself; this is the text above the figures.)
    """
    cands = result.candidates
    if not result.spiked:
        return f"<p>No layer spiked: no super-weight candidates. {html.escape(result.summary()[2][1])}.</p>"
    counts = cands["role"].value_counts()
    roles = ", ".join(f"{n} {role}{'s' if n > 1 else ''}" for role, n in counts.items())
    items = "".join(
        f"<li>{html.escape(_label(r))} = {r.weight:.4g}: loss {r.delta_loss:+.4f}, KL {r.kl:.3g} when zeroed "
        f"({r.effect_vs_random:.3g}× random weights); spike {r.out_value:.4g} at {html.escape(repr(r.token))}</li>"
        for r in cands[cands["role"] == "super weight"].itertuples()
    )
    parts = [
        f"<p>{len(cands)} candidates ({html.escape(roles)}). Super weights:</p><ul>{items or '<li>none</li>'}</ul>",
        "<p>row = output (super-activation) channel, col = input channel: HF <code>down_proj.weight[row, col]</code>, "
        "TransformerLens <code>W_out[layer, col, row]</code>. Effects: that weight alone zeroed, on the evaluation text.</p>",
    ]
    pub = result.published
    if pub is not None:
        found = ", ".join(f"layer {r.layer} [{r.row}, {r.col}]: {'found' if r.found else 'missed'}"
                          for r in pub[pub.published].itertuples())
        parts.append(f"<p>Published index ({html.escape(str(pub['model'].iloc[0]))}): {html.escape(found)}</p>")
    return "".join(parts)


# ------------------------------------------------------------------ experiments
def quality_figure(result: ExperimentResult, *, highlight: float | None = None) -> go.Figure:
    """Loss per setting; for a scale sweep, loss against the scale with the chosen scale marked."""
    q = result.quality
    if "scale" in q.columns:
        sweep = q[q["setting"] != "intact"].sort_values("scale")
        fig = figure("Quality as the super weights are scaled")
        fig.add_scatter(x=sweep["scale"], y=sweep["loss"], mode="lines+markers", name="loss",
                        customdata=sweep["perplexity"], hovertemplate="s = %{x}: loss %{y:.4f}, perplexity %{customdata:.4g}<extra></extra>")
        fig.add_hline(y=float(q["loss"].iloc[0]), line_dash="dot", line_color="grey")
        if highlight is not None:
            hit = sweep[sweep["scale"] == highlight]
            fig.add_scatter(x=tuple(hit["scale"]), y=tuple(hit["loss"]), mode="markers", name=f"s = {highlight:g}",
                            marker=dict(size=14, color="#d62728"))
        fig.update_xaxes(title="scale s of the super weights")
        fig.update_yaxes(title="mean next-token loss (nats)")
        return fig
    fig = figure(result.title)
    fig.add_bar(x=[plot_text(s) for s in q["setting"]], y=q["loss"], customdata=q["perplexity"], marker_color="#4c78a8",
                hovertemplate="%{x}: loss %{y:.4f}, perplexity %{customdata:.4g}<extra></extra>")
    fig.update_yaxes(title="mean next-token loss (nats)")
    return fig


def next_tokens_figure(result: ExperimentResult, setting: str | None = None, prompt: str | None = None) -> go.Figure:
    """Top next tokens after ``prompt`` (default: the first), one bar group per setting (or only ``setting``)."""
    tokens = result.next_tokens
    if tokens.empty:
        return figure("No prompts")
    prompt = prompt or tokens["prompt"].iloc[0]
    tokens = tokens[tokens["prompt"] == prompt]
    if setting is not None:
        tokens = tokens[tokens["setting"] == setting]
    fig = figure(f"Next token after “{prompt}”")
    for name, rows in tokens.groupby("setting", sort=False):
        fig.add_bar(x=[plot_text(repr(t)) for t in rows["token"]], y=rows["probability"], name=plot_text(name),
                    hovertemplate="%{x}: %{y:.3f}<extra>" + plot_text(name) + "</extra>")
    fig.update_yaxes(title="probability", range=[0, 1])
    fig.update_layout(barmode="group")
    return fig


def experiment_figures(result: ExperimentResult) -> dict[str, go.Figure]:
    figures = {"quality": quality_figure(result)}
    if not result.next_tokens.empty:
        figures["next_tokens"] = next_tokens_figure(result)
    return figures
