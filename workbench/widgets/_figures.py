"""What every explorer does with its figures: make FigureWidgets that share plotly's code, swap their content
in one update.

plotly's ``FigureWidget`` is an anywidget whose state carries its whole front-end code (plotly.js included,
~5 MB) as a string, for every figure: an explorer with eight figures puts 40 MB into a notebook saved with
its widget state (what nbclient and nbconvert do). :func:`figure_widget` sends that code once per kernel, with
the first figure, gzipped (2 MB; the browser unpacks it with ``DecompressionStream``); every later figure
carries a few lines that wait for that code in the page and use it. The page needs no network either way.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re

import plotly.graph_objects as go
from plotly.basedatatypes import BasePlotlyType

SHARED = "__workbenchPlotlyWidget"  # where the first figure's code leaves plotly's widget module, in the page
_EXPORTS = re.compile(r"export\s*\{([^{}]*)\}\s*;?\s*(?:/\*[\s\S]*?\*/\s*)*$")  # the bundle's last statement
_IDENT = re.compile(r"^[A-Za-z_$][\w$]*$")
WAIT_MS = 120_000

_carried = False  # whether a figure of this kernel has carried the code


def _export_names(bundle: str) -> list[str]:
    """The names the bundle exports besides ``default`` (its last ``export{local as name, ...}``), if it says."""
    found = _EXPORTS.search(bundle)
    names = [item.split(" as ")[-1].strip() for item in found.group(1).split(",") if item.strip()] if found else []
    return [name for name in names if _IDENT.match(name) and name != "default"]


# Every figure's view is its own layout and style root (CSS containment). plotly measures text while it draws
# (tick labels, legends, titles), and each measurement makes the browser lay out what changed since the last: in
# a notebook that is the whole page, so a redraw took ~3x its time on a bare page. Contained, a figure's redraw
# lays out only the figure; an explorer change settled in ~120 ms instead of ~210-370 ms in JupyterLab
# (benchmarks/widgets.py). The figure's size still comes from its content (no size containment).
CONTAIN = "layout style"


def _exports(names: list[str]) -> str:
    """The module's exports: plotly's own, its default wrapped so that each view's element is contained."""
    return (
        "const make = typeof shared.default === \"function\" ? shared.default : () => shared.default;\n"
        "export default () => {\n"
        "  const widget = make();\n"
        "  return {\n"
        "    initialize: widget.initialize && ((context) => widget.initialize(context)),\n"
        "    render(context) {\n"
        f"      context.el.style.contain = {json.dumps(CONTAIN)};\n"
        "      return widget.render(context);\n"
        "    },\n"
        "  };\n"
        "};\n") + "".join(
        f"export const {name} = shared[{json.dumps(name)}];\n" for name in names)


def _carrier(bundle: str, names: list[str]) -> str:
    """An ES module that unpacks plotly's widget module (gzip, base64), imports it and leaves it in the page."""
    packed = base64.b64encode(gzip.compress(bundle.encode(), 6, mtime=0)).decode()
    return (
        f"const packed = {json.dumps(packed)};\n"
        'if (typeof DecompressionStream === "undefined") throw new Error("this browser cannot unpack plotly\'s widget '
        'code (no DecompressionStream): use a current Chrome, Firefox or Safari");\n'
        "const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));\n"
        'const code = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();\n'
        'const url = URL.createObjectURL(new Blob([code], {type: "text/javascript"}));\n'
        "const shared = await import(url);\n"
        "URL.revokeObjectURL(url);\n"
        f"globalThis[{json.dumps(SHARED)}] = shared;\n" + _exports(names))


def _stub(names: list[str]) -> str:
    """An ES module that waits for the module the carrier left in the page and re-exports it."""
    return (
        f"const key = {json.dumps(SHARED)};\n"
        "for (let waited = 0; !globalThis[key]; waited += 50) {\n"
        f"  if (waited > {WAIT_MS}) throw new Error(\"plotly's widget code comes with the kernel's first figure, "
        "which is not on this page: restart the kernel and run the notebook again\");\n"
        "  await new Promise((resolve) => setTimeout(resolve, 50));\n"
        "}\n"
        "const shared = globalThis[key];\n" + _exports(names))


@functools.cache
def _classes() -> tuple[type, type]:
    """(the figure widget that carries plotly's code and leaves it in the page, the one that uses it)."""
    bundle = str(go.FigureWidget._esm)
    names = _export_names(bundle)
    return (type("SharingFigureWidget", (go.FigureWidget,), {"_esm": _carrier(bundle, names), "__module__": __name__}),
            type("SharedFigureWidget", (go.FigureWidget,), {"_esm": _stub(names), "__module__": __name__}))


def figure_widget(figure: go.Figure | None = None) -> go.FigureWidget:
    """A ``FigureWidget`` of ``figure`` (empty when None) that carries plotly's code only if it is the kernel's first."""
    global _carried
    sharing, shared = _classes()
    cls = shared if _carried else sharing
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
                _update(old, props, {"type", "uid"})
            _update(target.layout, source.layout.to_plotly_json(), set())
        return
    with target.batch_update():
        target.data = []
        target.add_traces(new)
        target.layout = source.layout


def _update(obj, props: dict, keep: set[str]) -> None:
    """Make ``obj`` hold exactly ``props`` (besides ``keep``), setting only the properties that differ: plotly
    validates (and the browser re-applies) every property set, and most stay as they were (the template, axes,
    sizes, hover templates), so sending only the changes is what makes a control change fast."""
    current = obj.to_plotly_json()
    changed = {k: v for k, v in props.items() if k not in current or not BasePlotlyType._vals_equal(current[k], v)}
    changed.update(dict.fromkeys(set(current) - set(props) - keep))
    if changed:
        obj.update(changed, overwrite=True)


def _json_safe(trace):
    z = getattr(trace, "z", None)
    if z is not None:
        trace.z = [[None if v is None or v != v else float(v) for v in row] for row in z]
    return trace
