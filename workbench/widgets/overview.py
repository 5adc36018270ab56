"""Model overview explorer: pick a statistic and a layer; spectra follow the layer."""

from __future__ import annotations

import ipywidgets as widgets

from ..render import overview as render
from ..render.page import summary_html
from ._figures import figure_widget, replace_figure
from ..analyses.overview.card import OverviewResult


class OverviewWidget(widgets.VBox):
    """Statistic selector + layer slider over an :class:`OverviewResult`.

    The per-layer statistic plot marks the chosen layer; the spectrum plot shows that
    layer's singular values for the chosen matrices. Everything is read from the result, so ``model`` is
    not needed (accepted as every explorer does).
    """

    def __init__(self, result: OverviewResult, model=None):
        self.result = result
        n_layers = result.n_layers
        self.metric = widgets.Dropdown(
            options=[(title.split(" per layer")[0], key) for key, (title, _, _) in render.METRICS.items()],
            value="outlier_ratio", description="statistic",
        )
        self.layer = widgets.IntSlider(value=0, min=0, max=n_layers - 1, description="layer", continuous_update=False)
        self.matrices = widgets.SelectMultiple(options=result.matrices, value=tuple(result.matrices), description="matrices", rows=len(result.matrices))
        self.metric_plot = figure_widget(render.metric_figure(result, self.metric.value, highlight_layer=0))
        self.spectrum_plot = figure_widget(render.spectrum_figure(result, 0))
        summary = widgets.HTML(summary_html(result))
        for control in (self.metric, self.layer, self.matrices):
            control.observe(self._update, names="value")
        super().__init__([
            summary,
            widgets.HBox([self.metric, self.layer]),
            self.metric_plot,
            widgets.HBox([self.matrices]),
            self.spectrum_plot,
        ])

    def _update(self, _change=None) -> None:
        replace_figure(self.metric_plot, render.metric_figure(self.result, self.metric.value, highlight_layer=self.layer.value))
        replace_figure(self.spectrum_plot, render.spectrum_figure(self.result, self.layer.value, list(self.matrices.value)))
