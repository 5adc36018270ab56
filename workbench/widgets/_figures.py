"""What every explorer does with its figures: swap a FigureWidget's content in one update."""

from __future__ import annotations

import plotly.graph_objects as go


def replace_figure(target: go.FigureWidget, source: go.Figure) -> None:
    """Show ``source`` in ``target``, redrawing the view once where possible.

    When the traces keep their number and types (a new candidate, class, kind...), they are
    restyled in place and the layout changed in the same batch: one update message, one
    redraw. Otherwise the traces are swapped (delete, add, relayout: three messages).
    Heat-map gaps (NaN) become None on the way: widget messages are JSON, which has no NaN.
    """
    new = [_json_safe(t) for t in source.data]
    if [t.type for t in target.data] == [t.type for t in new] and new:
        with target.batch_update():
            for old, trace in zip(target.data, new):
                props = trace.to_plotly_json()
                props.pop("type", None)
                stale = set(old.to_plotly_json()) - set(props) - {"type", "uid"}
                old.update({**props, **dict.fromkeys(stale)}, overwrite=True)
            layout = source.layout.to_plotly_json()
            stale = set(target.layout.to_plotly_json()) - set(layout)
            target.layout.update({**layout, **dict.fromkeys(stale)}, overwrite=True)
        return
    with target.batch_update():
        target.data = []
        target.add_traces(new)
        target.layout = source.layout


def _json_safe(trace):
    z = getattr(trace, "z", None)
    if z is not None:
        trace.z = [[None if v is None or v != v else float(v) for v in row] for row in z]
    return trace
