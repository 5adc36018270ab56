"""Super-weight explorer: spikes per layer, a candidate picker (coordinates, effect, super-activation
trace), a scale slider over the quality curve, and a link onward: trace the picked weight on a
prompt to the heads and tokens that drive its super activation and the heads that read it. No maths
here: everything is re-sliced from results; the scale sweep and the trace come from the cached
``wb.scale_super_weights`` / ``wb.trace_super_weight``."""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..render import super_weights as render
from ..render.page import summary_html
from ._compute import ComputeStatus
from ._figures import figure_widget, replace_figure
from ..analyses.super_weights.detect import SuperWeightResult
from ..analyses.super_weights.experiments import ExperimentResult
from ..analyses.super_weights.trace import TraceResult


class SuperWeightWidget(widgets.VBox):
    """Explore a :class:`SuperWeightResult`.

    ``scale``: a scale-sweep result (``wb.scale_super_weights``) for the slider; without one,
    a button computes it from ``model`` (cached), or the slider stays disabled.
    """

    def __init__(self, result: SuperWeightResult, model=None, *, scale=None):
        self.result, self.model, self.scale_result = result, model, scale
        cands = result.candidates
        options = [(f"layer {r.layer} [{r.row}, {r.col}] — {r.role}", i) for i, r in enumerate(cands.itertuples())]
        first = render.strongest(result)
        self.candidate = widgets.Dropdown(options=options or [("no candidates", -1)], value=first if first is not None else -1,
                                          description="candidate", layout=widgets.Layout(width="420px"))
        self.details = widgets.HTML()
        self.spike_plot = figure_widget(render.spikes_figure(result, highlight=first))
        self.trace_plot = figure_widget(render.trace_figure(result, first))
        self.scale = widgets.SelectionSlider(options=[1.0], value=1.0, description="scale s", continuous_update=False,
                                             disabled=True)
        self.compute_button = widgets.Button(description="compute scale sweep", disabled=model is None or not result.coordinates())
        self.quality_plot = figure_widget()
        self.tokens_plot = figure_widget()
        from ..analyses.super_weights.trace import TraceConfig

        self.trace_prompt = widgets.Text(value=TraceConfig.prompt, description="prompt", layout=widgets.Layout(width="420px"))
        self.trace_button = widgets.Button(description="trace this weight", disabled=model is None or first is None,
                                           tooltip="drivers and readers of the picked weight on the prompt (needs model=)")
        self.trace_view = TraceView()
        self.sweep_status, self.trace_status = ComputeStatus(), ComputeStatus()  # progress and errors, in the widget
        self.candidate.observe(self._on_candidate, names="value")
        self.scale.observe(self._on_scale, names="value")
        self.compute_button.on_click(self._on_compute)
        self.trace_button.on_click(self._on_trace)
        self._on_candidate()
        if scale is not None:
            self._use_scale(scale)
        super().__init__([
            widgets.HTML(summary_html(result)),
            self.spike_plot,
            self.candidate, self.details,
            self.trace_plot,
            widgets.HBox([self.scale] + ([] if scale is not None else [self.compute_button])),
            self.sweep_status,
            self.quality_plot, self.tokens_plot,
            widgets.HTML("<h4>Follow the weight: what drives it, who reads it</h4>"),
            widgets.HBox([self.trace_prompt, self.trace_button]),
            self.trace_status,
            self.trace_view,
        ])

    # ----------------------------------------------------------- callbacks
    def _on_candidate(self, _change=None) -> None:
        index = self.candidate.value
        if index is None or index < 0:
            self.details.value = "<p>No candidates: no layer spiked.</p>"
            return
        row = self.result.candidates.iloc[index]
        self.details.value = (
            f"<p><b>layer {int(row['layer'])}</b>, HF <code>down_proj.weight[{int(row['row'])}, {int(row['col'])}]</code> "
            f"= TransformerLens <code>W_out[{int(row['layer'])}, {int(row['col'])}, {int(row['row'])}]</code> "
            f"= {row['weight']:.4g} (rank {int(row['weight_rank'])} by |w|); input {row['in_value']:.4g}, "
            f"output spike {row['out_value']:.4g} at token {html.escape(repr(row['token']))} (position {int(row['position'])}); "
            f"zeroing it: loss {row['delta_loss']:+.4f}, KL {row['kl']:.3g} "
            f"({row['effect_vs_random']:.3g}× random weights) — <b>{html.escape(row['role'])}</b>.</p>"
        )
        replace_figure(self.trace_plot, render.trace_figure(self.result, index))
        replace_figure(self.spike_plot, render.spikes_figure(self.result, highlight=index))

    def _use_scale(self, scale_result: ExperimentResult) -> None:
        self.scale_result = scale_result
        scales = sorted(set(float(s) for s in scale_result.quality["scale"]))
        self.scale.options = scales
        self.scale.value = 1.0 if 1.0 in scales else scales[0]
        self.scale.disabled = False
        self.compute_button.disabled = True
        self._on_scale()

    def _on_compute(self, _button=None) -> None:
        from ..analyses.super_weights.api import scale_super_weights

        def sweep():  # cached per model and weights
            self._use_scale(scale_super_weights(self.model, weights=self.result.coordinates()))

        self.sweep_status.run("scale sweep", sweep, button=self.compute_button)
        if self.sweep_status.failed is None:  # done for good: the slider has the sweep now
            self.compute_button.disabled, self.compute_button.description = True, "computed"

    def _on_scale(self, _change=None) -> None:
        if self.scale_result is None:
            return
        s = float(self.scale.value)
        replace_figure(self.quality_plot, render.quality_figure(self.scale_result, highlight=s))
        replace_figure(self.tokens_plot, render.next_tokens_figure(self.scale_result, setting=f"scale {s:g}"))

    def _on_trace(self, _button=None) -> None:
        from ..analyses.super_weights.api import trace_super_weight

        row = self.result.candidates.iloc[self.candidate.value]
        weight = (int(row["layer"]), int(row["row"]), int(row["col"]))
        self.trace_status.run(  # a bad prompt is shown here and the controls come back
            f"tracing layer {weight[0]} [{weight[1]}, {weight[2]}]",
            lambda: self.trace_view.show(trace_super_weight(self.model, weight=weight, prompt=self.trace_prompt.value)),
            controls=(self.candidate, self.trace_prompt), button=self.trace_button, busy="tracing...")


class TraceView(widgets.VBox):
    """A :class:`~workbench.analyses.super_weights.trace.TraceResult`: summary, per-token super activation,
    the residual-stream parts that drive it, and the heads whose attention it moves. Empty until
    :meth:`show` is given a result; ``model`` is not needed (accepted as every explorer does)."""

    def __init__(self, result: TraceResult | None = None, model=None):
        self.text = widgets.HTML()
        self.plots = {name: figure_widget() for name in ("tokens", "drivers", "readers")}
        super().__init__([self.text, *self.plots.values()])
        if result is not None:
            self.show(result)

    def show(self, result: TraceResult) -> None:
        self.text.value = summary_html(result)
        for name, fig in result.figures().items():
            replace_figure(self.plots[name], fig)

