"""What every explorer does with its figures: swap a FigureWidget's content in one update."""

from __future__ import annotations

import plotly.graph_objects as go


def replace_figure(target: go.FigureWidget, source: go.Figure) -> None:
    """Show ``source`` in ``target`` in one message, so the view updates once.

    Heat-map gaps (NaN) become None on the way: widget messages are JSON, which has no NaN.
    """
    with target.batch_update():
        target.data = []
        target.add_traces([_json_safe(t) for t in source.data])
        target.layout = source.layout


def _json_safe(trace):
    z = getattr(trace, "z", None)
    if z is not None:
        trace.z = [[None if v is None or v != v else float(v) for v in row] for row in z]
    return trace
