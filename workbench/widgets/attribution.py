"""Attribution explorers: pick a generated token (and a method) and see which context tokens mattered."""

from __future__ import annotations

import ipywidgets as widgets

from ..render import attribution as render
from ..render.page import summary_html
from ._compute import ComputeStatus
from ._figures import figure_widget, replace_figure
from ..analyses.attribution.compare import ComparisonResult
from ..analyses.attribution.result import AttributionResult


def _target_options(tokens: list[str], n_prompt: int, n_targets: int) -> list[tuple[str, int]]:
    return [(f"{j}: {render.readable_token(tokens[n_prompt + j])}", j) for j in range(n_targets)]


class AttributionWidget(widgets.VBox):
    """Generated-token selector + token heat map + target x context heat map for one result.

    With ``model`` given, a method selector re-runs the (cached) attribution with another method
    on the same prompt and targets.
    """

    def __init__(self, result: AttributionResult, model=None):
        self.results = {result.method: result}
        self.model = model
        self.result = result
        self.target = widgets.Dropdown(options=_target_options(result.tokens, result.n_prompt, result.n_targets),
                                       value=0, description="target")
        from ..analyses.attribution import ALL_METHODS

        self.method = widgets.Dropdown(options=list(ALL_METHODS) if model is not None else [result.method],
                                       value=result.method, description="method", disabled=model is None)
        self.tokens = widgets.HTML(render.result_heatmaps_html(result, 0))
        self.heatmap = figure_widget(render.heatmap_figure(result))
        self.top = widgets.HTML(self._top_html())
        self.status = ComputeStatus()  # another method's run: its progress and errors
        self.target.observe(self._update, names="value")
        self.method.observe(self._switch_method, names="value")
        super().__init__([widgets.HTML(summary_html(result)), widgets.HBox([self.target, self.method]), self.status,
                          self.tokens, self.top, self.heatmap])

    def _top_html(self) -> str:
        table = self.result.top_tokens(self.target.value, 8)
        extra = [c for c in ("low", "high", "p_first", "tied_first") if c in table]  # ReAGent's uncertainty
        top = table[["rank", "context_position", "context_token", "importance", *extra]]
        top = top.assign(context_token=top["context_token"].map(render.readable_token))
        return top.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", border=0)

    def _update(self, _change=None) -> None:
        self.tokens.value = render.result_heatmaps_html(self.result, self.target.value)
        self.top.value = self._top_html()

    def _switch_method(self, change) -> None:
        method = change["new"]
        if method == self.result.method:  # set back after a failed run
            return
        self.status.run(f"{method} attribution", lambda: self._show_method(method), controls=(self.target, self.method))
        if self.status.failed is not None:  # keep showing the method whose result is on screen
            self.method.value = self.result.method

    def _show_method(self, method: str) -> None:
        from ..analyses.attribution.api import attribute

        if method not in self.results:
            cfg = self.result.config
            target = getattr(cfg, "target", None)
            messages = getattr(cfg, "messages", None)
            text = {"messages": messages} if messages else {"prompt": cfg.prompt}
            self.results[method] = attribute(self.model, method=method, target=target, max_new_tokens=cfg.max_new_tokens,
                                             prepend_bos=cfg.prepend_bos, **text)
        self.result = self.results[method]
        replace_figure(self.heatmap, render.heatmap_figure(self.result))
        self._update()


class ComparisonWidget(widgets.VBox):
    """Prompt / target / method selectors over a comparison: token heat map of the chosen method,
    that target's faithfulness figures, and the summary table (log ratios vs random). It recomputes
    nothing, so ``model`` is not needed (accepted as every explorer does)."""

    def __init__(self, result: ComparisonResult, model=None):
        self.result = result
        prompts = result.config.prompts
        self.prompt = widgets.Dropdown(options=[(p[:60], i) for i, p in enumerate(prompts)], value=0, description="prompt")
        self.method = widgets.Dropdown(options=list(result.config.methods), value=result.config.methods[0], description="method")
        self.target = widgets.Dropdown(description="target")
        self.tokens = widgets.HTML()
        self.metrics = widgets.HTML()
        summary = render.comparison_table(result).to_html(index=False, escape=True, float_format=lambda v: f"{v:.3g}", border=0)
        self.prompt.observe(self._prompt_changed, names="value")
        for control in (self.method, self.target):
            control.observe(self._update, names="value")
        self._prompt_changed()
        super().__init__([widgets.HTML(summary_html(result)), widgets.HBox([self.prompt, self.target, self.method]),
                          self.tokens, self.metrics, widgets.HTML("<b>All prompts</b>" + summary),
                          figure_widget(render.comparison_figure(result))])

    def _prompt_changed(self, _change=None) -> None:
        prompt = self.prompt.value
        self.target.unobserve(self._update, names="value")
        self.target.options = _target_options(self.result.tokens(prompt), self.result.n_prompt(prompt),
                                              self.result.n_targets(prompt))
        self.target.value = 0
        self.target.observe(self._update, names="value")
        self._update()

    def _update(self, _change=None) -> None:
        tokens, n_prompt, imp = render.sequence_importance(self.result, self.method.value, self.prompt.value)
        j = self.target.value or 0
        self.tokens.value = render.token_heatmap_html(tokens, imp[j], n_prompt + j, label=self.method.value)
        t = self.result.faithfulness
        sel = t[(t["prompt_index"] == self.prompt.value) & (t["target_index"] == j)]
        pivot = sel.pivot(index="method", columns="metric", values="value").reset_index()
        self.metrics.value = ("<b>This target</b> (random = the random-importance baseline)"
                              + pivot.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3g}", border=0))
