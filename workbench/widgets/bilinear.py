"""Bilinear spectrum explorer: pick an output direction and an input; every view re-slices the result."""

from __future__ import annotations

import ipywidgets as widgets

from ..render import bilinear as render
from ..render.page import summary_html
from ._figures import figure_widget, replace_figure
from ..analyses.bilinear.spectrum import BilinearSpectrumResult


class BilinearWidget(widgets.VBox):
    """Direction selector + input selector over a :class:`BilinearSpectrumResult` (or a replacement result).

    Shows the eigenvalue spectrum (chosen direction bold), its top positive / negative eigenvectors
    (as images for image models, as the tokens / inputs they read otherwise, with a table), the
    contributions lambda_i (v_i^T x)^2 for the chosen input, and the truncation curve. Replacement
    results carry their fidelity in the summary and in every figure title. Everything is re-sliced from the
    result, so ``model`` is not needed (accepted as every explorer does).
    """

    def __init__(self, result: BilinearSpectrumResult, model=None):
        self.result = result
        names = result.direction_names
        inputs = result.input_table
        self.direction = widgets.Dropdown(options=[(n, i) for i, n in enumerate(names)],
                                          value=0, description="direction", layout=widgets.Layout(width="420px"))
        self.input = widgets.Dropdown(options=[(f"{i}: {label}", i) for i, label in enumerate(inputs["label"])],
                                      value=0, description="input", layout=widgets.Layout(width="420px"))
        self.spectrum_plot = figure_widget(render.spectrum_figure(result, 0))
        self.vector_plot = figure_widget(render.eigenvector_figure(result, 0))
        self.contrib_plot = figure_widget(render.contributions_figure(result, 0, 0))
        self.image_plot = figure_widget(render.input_image_figure(result, 0)) if result.image_shape else None
        self.truncation_plot = figure_widget(render.truncation_figure(result, 0))
        self.table = widgets.HTML(self._table_html(0))
        self.direction.observe(self._on_direction, names="value")
        self.input.observe(self._on_input, names="value")
        contrib_row = [self.contrib_plot] + ([self.image_plot] if self.image_plot is not None else [])
        super().__init__([
            widgets.HTML(summary_html(result)),
            widgets.HBox([self.direction, self.input]),
            self.spectrum_plot,
            self.vector_plot,
            self.table,
            widgets.HBox(contrib_row),
            self.truncation_plot,
        ])

    def _table_html(self, j: int) -> str:
        table = self.result.eigenvector_table
        rows = table[table.direction == self.result.direction_names[j]]
        return rows.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", border=0)

    def _on_direction(self, _change=None) -> None:
        j = self.direction.value
        replace_figure(self.spectrum_plot, render.spectrum_figure(self.result, j))
        replace_figure(self.vector_plot, render.eigenvector_figure(self.result, j))
        replace_figure(self.truncation_plot, render.truncation_figure(self.result, j))
        self.table.value = self._table_html(j)
        self._draw_contributions()  # the input's image does not depend on the direction: left as it is

    def _draw_contributions(self) -> None:
        replace_figure(self.contrib_plot, render.contributions_figure(self.result, self.input.value, self.direction.value))

    def _on_input(self, _change=None) -> None:
        self._draw_contributions()
        if self.image_plot is not None:
            replace_figure(self.image_plot, render.input_image_figure(self.result, self.input.value))
