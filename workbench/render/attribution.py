"""Attribution views: token heat maps (escaped HTML), target x context heat map, faithfulness bars.

Pure functions of a result: no model access, same input -> same bytes.
"""

from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go

from .style import figure, plot_text
from ..analyses.attribution.compare import ComparisonResult
from ..analyses.attribution.reagent import ReagentResult
from ..analyses.attribution.result import AttributionResult

_VISIBLE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "↵"}


def readable_token(token: str) -> str:
    """A token with its whitespace made visible (``·`` space, ``⏎`` newline, ``⇥`` tab) and control
    characters shown as ``\\xNN``; not yet HTML-escaped."""
    if token == "":
        return "∅"
    out = []
    for ch in token:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _colour(value: float, scale: float) -> str:
    """Orange for positive importance, blue for negative; opacity = |value| / scale."""
    if math.isnan(value) or scale <= 0:
        return "transparent"
    alpha = min(1.0, abs(value) / scale)
    rgb = "230,120,20" if value >= 0 else "40,110,220"
    return f"rgba({rgb},{alpha:.3f})"


def token_heatmap_html(tokens: list[str], importance: list[float], target_position: int, *,
                       label: str = "", notes: dict[int, str] | None = None, tied: set[int] | None = None) -> str:
    """One line of tokens: context coloured by importance, the target boxed, later tokens greyed, and so are
    context tokens that are not attributed (special tokens, a chat template's tokens).

    ``importance[p]`` for p < target_position (NaN: not attributed). ``notes[p]``: more text for the token's
    tooltip (an interval); ``tied``: positions tied for first, underlined twice. Every token is escaped.
    """
    notes, tied = notes or {}, tied or set()
    vals = [v for v in importance[:target_position] if not math.isnan(v)]
    scale = max((abs(v) for v in vals), default=0.0)
    cells = []
    for p, tok in enumerate(tokens):
        text = html.escape(readable_token(tok))
        if p < target_position and math.isnan(importance[p]):
            tip = f"position {p}: {html.escape(repr(tok))}, not attributed (a special or chat-template token)"
            cells.append(f'<span class="wb-tok wb-fixed" style="color:#aaa" title="{tip}">{text}</span>')
        elif p < target_position:
            v = importance[p]
            tip = f"position {p}: {html.escape(repr(tok))}, importance {v:.4g}" + html.escape(notes.get(p, ""))
            mark = ";border-bottom:3px double #222" if p in tied else ""
            cls = "wb-tok wb-tied" if p in tied else "wb-tok"
            cells.append(f'<span class="{cls}" style="background:{_colour(v, scale)}{mark}" title="{tip}">{text}</span>')
        elif p == target_position:
            cells.append(f'<span class="wb-tok wb-target" style="outline:2px solid #333" title="target at position {p}">{text}</span>')
        else:
            cells.append(f'<span class="wb-tok" style="color:#aaa">{text}</span>')
    head = f'<div class="wb-attr-label">{html.escape(label)}</div>' if label else ""
    style = "font-family:monospace;line-height:1.9;white-space:normal"
    return f'<div class="wb-attr-line" style="{style}">{head}{"".join(cells)}</div>'


def _rows(result: AttributionResult) -> list[tuple[int, str, list[float]]]:
    """(position, token, importance row) of every target."""
    n_prompt, tokens = result.n_prompt, result.tokens
    return [(n_prompt + j, tokens[n_prompt + j], row) for j, row in enumerate(result.importances.tolist())]


def _uncertainty(result, j: int) -> tuple[dict[int, str], set[int], str]:
    """Tooltip notes (95% interval, probability of ranking first), the tied-first positions and a line naming
    them, for target ``j`` of a result that has them (ReAGent); nothing otherwise."""
    t = result.tensors
    if "tied_first" not in t:
        return {}, set(), ""
    low, high, p_first = (t[k][j].tolist() for k in ("importance_low", "importance_high", "p_first"))
    notes = {p: f", 95% interval {lo:.3g} .. {hi:.3g} over probes, ranks first with probability {pf:.2f}"
             for p, (lo, hi, pf) in enumerate(zip(low, high, p_first)) if not math.isnan(pf)}
    tied = set(t["tied_first"][j].nonzero()[:, 0].tolist())
    n = int(result.probe_count[j]) if hasattr(result, "probe_count") else 0
    if len(tied) > 1:
        names = ", ".join(f"{readable_token(result.tokens[p])!r} ({p_first[p]:.2f})" for p in sorted(tied))
        line = f"tied for first over {n} probes (probability of ranking first): {names}"
    else:
        (p,) = tied or {-1}
        line = (f"first: {readable_token(result.tokens[p])!r}, distinct from every other token over {n} probes "
                f"(ranks first with probability {p_first[p]:.2f})") if p >= 0 else ""
    return notes, tied, f'<div class="wb-attr-ties" style="font-size:90%">{html.escape(line)}</div>'


def result_heatmaps_html(result: AttributionResult, target: int | None = None) -> str:
    """Token heat maps of an attribution result: every target (or one), with a short legend; ReAGent's tied-first
    tokens are underlined twice and named, each token's interval is in its tooltip."""
    lines = []
    for j, (pos, tok, imp) in enumerate(_rows(result)):
        if target is not None and j != target:
            continue
        label = f"target {j}: {readable_token(tok)!r} (position {pos})"
        notes, tied, line = _uncertainty(result, j)
        lines.append(token_heatmap_html(result.tokens, imp, pos, label=label, notes=notes, tied=tied) + line)
    legend = ("<p>Method <b>" + html.escape(result.method) + "</b>. Orange: the token raised the target "
              "(darker = more important); blue: negative attribution; boxed: the target; grey: later tokens and "
              "tokens never attributed (special tokens, a chat template's). "
              + ("Underlined twice: tied for first (not distinguishable from the top token over the probes run). "
                 if "tied_first" in result.tensors else "")
              + "· is a space, ⏎ a newline.</p>")
    return legend + "".join(lines)


def heatmap_figure(result: AttributionResult, *, title: str | None = None) -> go.Figure:
    """Targets (rows) x context tokens (columns), coloured by importance."""
    n_prompt, tokens = result.n_prompt, result.tokens
    imp = result.importances
    W = imp.shape[1]
    x = [f"{p}:{plot_text(readable_token(t))}" for p, t in enumerate(tokens[:W])]
    y = [f"{j}:{plot_text(readable_token(tokens[n_prompt + j]))}" for j in range(imp.shape[0])]
    z = [[None if math.isnan(v) else v for v in row] for row in imp.tolist()]
    signed = any(v is not None and v < 0 for row in z for v in row)
    fig = figure(title or f"{result.method}: importance of each context token per target",
                 height=max(260, 60 + 40 * len(y)))
    fig.add_heatmap(z=z, x=x, y=y, colorscale="RdBu" if signed else "Oranges", zmid=0 if signed else None,
                    reversescale=signed, hoverongaps=False,
                    hovertemplate="target %{y}<br>context %{x}<br>importance %{z:.4g}<extra></extra>")
    fig.update_yaxes(autorange="reversed", title="target", type="category")
    fig.update_xaxes(title="context token", type="category", tickangle=-45)
    return fig


def probes_figure(result: ReagentResult) -> go.Figure:
    """ReAGent: steps each probe ran before its stopping check succeeded (or max_steps)."""
    steps, stopped, count = result.probe_steps, result.probe_stopped, result.probe_count.tolist()
    n_prompt, tokens = result.n_prompt, result.tokens
    fig = figure("ReAGent probes: steps until stopped (hollow: hit max_steps)")
    for j in range(steps.shape[0]):
        name = f"{j}:{plot_text(readable_token(tokens[n_prompt + j]))}"
        n = count[j]
        fig.add_scatter(x=[name] * n, y=steps[j, :n].tolist(), mode="markers", showlegend=False,
                        marker=dict(symbol=["circle" if s else "circle-open" for s in stopped[j, :n].tolist()], size=9),
                        hovertemplate="probe steps %{y}<extra></extra>")
    fig.update_xaxes(title="target", type="category")
    fig.update_yaxes(title="steps", type="log")
    return fig


def attribution_figures(result: AttributionResult) -> dict[str, go.Figure]:
    return {"heatmap": heatmap_figure(result)}


def reagent_figures(result: ReagentResult) -> dict[str, go.Figure]:
    """A ReAGent result's: the heat map and how long its probes ran."""
    return {**attribution_figures(result), "probes": probes_figure(result)}


# ----------------------------------------------------------------- comparison
def comparison_figure(result: ComparisonResult, metrics=("soft_ns", "soft_nc")) -> go.Figure:
    """log(sum method / sum random) per method and soft metric: > 0 is better than random."""
    s = result.method_summary
    s = s[s["metric"].isin(metrics) & (s["method"] != "random")]
    fig = figure("Faithfulness vs random importance: log(Σ method / Σ random), higher is better")
    for metric, rows in s.groupby("metric", sort=False):
        fig.add_bar(x=rows["method"], y=rows["log_ratio"], name=metric,
                    hovertemplate=f"{metric} %{{x}}: %{{y:.3f}}<extra></extra>")
    fig.add_hline(y=0, line_color="grey")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="log ratio")
    return fig


def hard_figure(result: ComparisonResult) -> go.Figure:
    """Hard comprehensiveness (higher better) and sufficiency (lower better) vs rationale ratio."""
    t = result.faithfulness
    hard = t[t["metric"].str.contains("@")].copy()
    hard[["kind", "ratio"]] = hard["metric"].str.split("@", expand=True)
    hard["ratio"] = hard["ratio"].astype(float)
    means = hard.groupby(["method", "kind", "ratio"], sort=False)["value"].mean().reset_index()
    fig = figure("Hard metrics: comprehensiveness (solid, higher better), sufficiency (dotted, lower better)")
    for (method, kind), rows in means.groupby(["method", "kind"], sort=False):
        fig.add_scatter(x=rows["ratio"], y=rows["value"], mode="lines+markers", name=f"{method} {kind}",
                        line_dash="solid" if kind == "comp" else "dot")
    fig.update_xaxes(title="rationale ratio")
    fig.update_yaxes(title="p(target) drop")
    return fig


def comparison_figures(result: ComparisonResult) -> dict[str, go.Figure]:
    return {"soft": comparison_figure(result), "hard": hard_figure(result)}


def comparison_table(result: ComparisonResult) -> pd.DataFrame:
    return result.wide()


def sequence_importance(result: ComparisonResult, method: str, prompt: int) -> tuple[list[str], int, list[list[float]]]:
    """Tokens, prompt length and importance rows of prompt ``prompt`` (an index) by ``method``."""
    return result.tokens(prompt), result.n_prompt(prompt), result.importances(method, prompt).tolist()


def comparison_html(result: ComparisonResult) -> str:
    """The summary (escaped) and, for the first prompt's first target, each method's token heat map."""
    table = comparison_table(result).to_html(index=False, escape=True, float_format=lambda v: f"{v:.3g}", border=0,
                                             classes="wb-table")
    parts = ["<p>Soft-NS / Soft-NC: log(Σ method / Σ random importance), > 0 better than random; "
             "comp/suff: mean drop in p(target), comprehensiveness higher and sufficiency lower is better.</p>", table]
    for method in result.config.methods:
        tokens, n_prompt, imp = sequence_importance(result, method, 0)
        parts.append(token_heatmap_html(tokens, imp[0], n_prompt, label=method))
    return "".join(parts)
