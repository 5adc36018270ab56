"""The explorer of a result without one of its own: its summary and every figure, as live plotly widgets."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from ..render.page import summary_html
from ..render.registry import figures
from ..results import Result


class FiguresView(widgets.VBox):
    """Summary + one FigureWidget per figure of ``result`` (zoom, hover); ``model`` is not needed."""

    def __init__(self, result: Result, model: Any = None):
        self.result = result
        plots = [go.FigureWidget(fig) for fig in figures(result).values()]
        super().__init__([widgets.HTML(summary_html(result)), *plots])
