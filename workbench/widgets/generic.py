"""The explorer of a result without one of its own: its summary and every figure, as live plotly widgets."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..render.page import summary_html
from ..render.registry import figures
from ..results import Result
from ._figures import figure_widget


class FiguresView(widgets.VBox):
    """Summary + one FigureWidget per figure of ``result`` (zoom, hover); ``model`` is not needed."""

    def __init__(self, result: Result, model: Any = None):
        self.result = result
        plots = [figure_widget(fig) for fig in figures(result).values()]
        super().__init__([widgets.HTML(summary_html(result)), *plots])
