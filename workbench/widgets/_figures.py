"""What every explorer does with its figures: make FigureWidgets that share plotly's code, swap their content
in one update.

plotly's ``FigureWidget`` is an anywidget whose state carries its whole front-end code (plotly.js included,
~5 MB) as a string, for every figure: an explorer with eight figures puts 40 MB into a notebook saved with
its widget state (what nbclient and nbconvert do). :func:`figure_widget` sends that code once per kernel, with
the first figure; every later figure carries a few lines that wait for that code in the page and use it. The
page needs no network either way.
"""

from __future__ import annotations

import functools
import json
import re

import plotly.graph_objects as go

SHARED = "__workbenchPlotlyWidget"  # where the first figure's code leaves its exports, in the page
_EXPORTS = re.compile(r"export\s*\{([^{}]*)\}\s*;?\s*(?:/\*[\s\S]*?\*/\s*)*$")  # the bundle's last statement
_IDENT = re.compile(r"^[A-Za-z_$][\w$]*$")
WAIT_MS = 120_000

_carried = False  # whether a figure of this kernel has carried the code


def _exports(bundle: str) -> dict[str, str] | None:
    """The bundle's ``export{local as name, ...}`` as {name: local}, or None when it does not end with one."""
    found = _EXPORTS.search(bundle)
    if found is None:
        return None
    pairs = {}
    for item in filter(None, (part.strip() for part in found.group(1).split(","))):
        local, _, name = (w.strip() for w in item.partition(" as "))
        name = name or local
        if not (_IDENT.match(local) and (_IDENT.match(name))):
            return None
        pairs[name] = local
    return pairs if "default" in pairs else None


def _stub(names: list[str]) -> str:
    """An ES module that waits for the shared exports and re-exports them."""
    lines = [
        f"const key = {json.dumps(SHARED)};",
        "for (let waited = 0; !globalThis[key]; waited += 50) {",
        f"  if (waited > {WAIT_MS}) throw new Error(\"plotly's widget code comes with the kernel's first figure, "
        "which is not on this page: restart the kernel and run the notebook again\");",
        "  await new Promise((resolve) => setTimeout(resolve, 50));",
        "}",
        "const shared = globalThis[key];",
        "export default shared.default;",
    ]
    lines += [f"export const {name} = shared[{json.dumps(name)}];" for name in names if name != "default"]
    return "\n".join(lines) + "\n"


@functools.cache
def _classes() -> tuple[type, type] | None:
    """(the figure widget that carries plotly's code and shares it, the one that uses it), or None when plotly's
    bundle is not of the shape this expects (then every figure carries its own, as plotly does)."""
    bundle = str(go.FigureWidget._esm)
    pairs = _exports(bundle)
    if pairs is None:
        return None
    shared = ", ".join(f"{json.dumps(name)}: {local}" for name, local in pairs.items())
    carrier = f"{bundle}\n;globalThis[{json.dumps(SHARED)}] = {{{shared}}};\n"
    return (type("SharingFigureWidget", (go.FigureWidget,), {"_esm": carrier, "__module__": __name__}),
            type("SharedFigureWidget", (go.FigureWidget,), {"_esm": _stub(list(pairs)), "__module__": __name__}))


def figure_widget(figure: go.Figure | None = None) -> go.FigureWidget:
    """A ``FigureWidget`` of ``figure`` (empty when None) that carries plotly's code only if it is the kernel's first."""
    global _carried
    classes = _classes()
    if classes is None:
        return go.FigureWidget(figure)
    cls = classes[1] if _carried else classes[0]
    _carried = True
    return cls(figure)


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
