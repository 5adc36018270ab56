"""Talking-heads explorer: composition heat map with a kind selector; click a pair for its per-component
breakdown and singular spectra; Laundry List accuracy curve with an OV-component intervention control.

No maths here: figures come from ``render.heads``; the Laundry List control calls the cached
``laundry_list`` analysis.
"""

from __future__ import annotations

import re

import ipywidgets as widgets

from ..render import heads as render
from ..render.page import summary_html
from ._compute import ComputeStatus
from ._figures import figure_widget, replace_figure
from ..analyses.heads.composition import HeadCompositionResult

_LABEL = re.compile(r"L(\d+)H(\d+)")


class HeadCompositionWidget(widgets.VBox):
    """Kind selector + layer / head heat map; the chosen pair's breakdown and spectra below.

    Select a pair by clicking a heat-map cell (head view: that pair; layer view: the best head pair
    of those two layers) or from the ``pair`` list of top pairs. With ``model`` given, a Laundry List
    panel lets you rescale the writer's OV components and compare accuracy before and after.
    """

    def __init__(self, result: HeadCompositionResult, model=None, **laundry_options):
        self.result = result
        self.kind = widgets.ToggleButtons(options=result.kinds, value=result.kinds[0], description="kind")
        self.view = widgets.ToggleButtons(options=[("layer × layer", "layers"), ("head × head", "heads")],
                                          value="layers", description="view")
        self.pair = widgets.Dropdown(description="pair", layout=widgets.Layout(width="420px"))
        self.heatmap = figure_widget()
        self.breakdown = figure_widget()
        self.spectra = figure_widget()
        self.laundry = LaundryListPanel(model, **laundry_options) if model is not None else None
        self._fill_pairs()
        self._draw_heatmap()
        self._draw_pair()
        self.kind.observe(self._on_kind, names="value")
        self.view.observe(lambda _: self._draw_heatmap(), names="value")
        self.pair.observe(lambda _: self._draw_pair(), names="value")
        children = [widgets.HTML(summary_html(result)), widgets.HBox([self.kind, self.view]), self.heatmap,
                    self.pair, widgets.HBox([self.breakdown, self.spectra])]
        if self.laundry is not None:
            children.append(self.laundry)
        super().__init__(children)

    # ------------------------------------------------------------- pairs
    def _fill_pairs(self) -> None:
        top = render.top_pairs_frame(self.result, self.kind.value, n=50)
        options = [(f"L{r.writer_layer}H{r.writer_head} → L{r.reader_layer}H{r.reader_head}  ({r.score:.3f})",
                    (int(r.writer_layer), int(r.writer_head), int(r.reader_layer), int(r.reader_head)))
                   for r in top.itertuples()]
        self.pair.options = options
        if options:
            self.pair.value = options[0][1]

    def select(self, writer: tuple[int, int], reader: tuple[int, int]) -> None:
        """Show the breakdown of one pair (as a click on the heat map does)."""
        value = (*writer, *reader)
        if value not in [v for _, v in self.pair.options]:
            label = f"L{writer[0]}H{writer[1]} → L{reader[0]}H{reader[1]}"
            self.pair.options = [*self.pair.options, (label, value)]
        self.pair.value = value

    def _on_kind(self, _change=None) -> None:
        before = self.pair.value
        self._fill_pairs()
        self._draw_heatmap()
        if self.pair.value == before:  # otherwise the pair's own observer has drawn it already
            self._draw_pair()

    # ------------------------------------------------------------- figures
    def _draw_heatmap(self) -> None:
        kind = self.kind.value
        fig = render.layer_heatmap(self.result, kind) if self.view.value == "layers" else render.head_heatmap(self.result, kind)
        replace_figure(self.heatmap, fig)
        self.heatmap.data[0].on_click(self._on_click)

    def _on_click(self, trace, points, _state=None) -> None:
        if not points.xs:
            return
        x, y = points.xs[0], points.ys[0]
        if self.view.value == "heads":
            writer, reader = _LABEL.fullmatch(str(y)), _LABEL.fullmatch(str(x))
            if writer is None or reader is None:  # a click between the labelled cells
                return
            wl, wh = map(int, writer.groups())
            rl, rh = map(int, reader.groups())
            self.select((wl, wh), (rl, rh))
        else:
            self.select(*self._best_in_layers(int(y), int(x)))

    def _best_in_layers(self, writer_layer: int, reader_layer: int):
        pairs = self.result.pairs
        rows = pairs[(pairs.kind == self.kind.value) & (pairs.writer_layer == writer_layer) & (pairs.reader_layer == reader_layer)]
        r = rows.iloc[0]  # the table is sorted by score
        return (int(r.writer_layer), int(r.writer_head)), (int(r.reader_layer), int(r.reader_head))

    def _draw_pair(self) -> None:
        if self.pair.value is None:
            return
        wl, wh, rl, rh = self.pair.value
        replace_figure(self.breakdown, render.breakdown_figure(self.result, (wl, wh), (rl, rh), self.kind.value))
        replace_figure(self.spectra, render.spectra_figure(self.result, [(wl, wh), (rl, rh)]))
        if self.laundry is not None:
            self.laundry.follow(wl, wh, self.result.breakdown((wl, wh), (rl, rh), self.kind.value))


_EDIT = re.compile(r"L(\d+)H(\d+):([\d,\s]+)x([\d.]+)")


def parse_edits(text: str) -> tuple[tuple[int, int, tuple[int, ...], float], ...]:
    """``"L8H1:0,1x0; L2H2:1x0.5"`` -> ((8, 1, (0, 1), 0.0), (2, 2, (1,), 0.5))."""
    from ..errors import InputError

    edits = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = _EDIT.fullmatch(part)
        if match is None:
            raise InputError(f"cannot read {part!r}: write edits as L<layer>H<head>:<components>x<scale>; ...")
        layer, head, comps, scale = match.groups()
        edits.append((int(layer), int(head), _ints(comps), float(scale)))
    return tuple(edits)


def _ints(text: str) -> tuple[int, ...]:
    """``"0, 3"`` -> (0, 3)."""
    return tuple(int(c) for c in re.split(r"[,\s]+", text.strip()) if c)


def format_edits(edits) -> str:
    return "; ".join(f"L{l}H{h}:{','.join(map(str, c))}x{s:g}" for l, h, c, s in edits)


class LaundryListPanel(widgets.VBox):
    """Laundry List accuracy curve before / after rescaling OV components.

    Build the edit list with the layer / head / components / scale controls ("add"), type it
    (``L8H1:0,1x0; L2H2:1x0``), or let "suggest" fill it with the 5 components whose removal the
    first-order scan (:func:`workbench.laundry_component_scan`, on prompts of another seed) says
    helps most. "run" compares accuracy with and without the edits; the model is restored after.
    """

    def __init__(self, model, **options):
        from ..analyses.heads.api import laundry_component_scan, laundry_list

        self.model, self.options, self._run, self._scan = model, options, laundry_list, laundry_component_scan
        self.layer = widgets.BoundedIntText(value=0, min=0, max=model.facts.n_layers - 1, description="layer")
        self.head = widgets.BoundedIntText(value=0, min=0, max=model.facts.n_heads - 1, description="head")
        self.components = widgets.Text(value="0", description="components", placeholder="e.g. 0, 3")
        self.scale = widgets.FloatSlider(value=2.0, min=0.0, max=4.0, step=0.25, description="scale")
        self.edits = widgets.Text(value="", description="edits", placeholder="L8H1:0,1x0; L2H2:1x0",
                                  layout=widgets.Layout(width="640px"))
        self.add_button = widgets.Button(description="add")
        self.suggest_button = widgets.Button(description="suggest (scan)")
        self.button = widgets.Button(description="run Laundry List", button_style="primary")
        self.status = ComputeStatus()  # the run's / scan's progress and errors
        self.curve = figure_widget()
        self.add_button.on_click(lambda _: self.add())
        self.suggest_button.on_click(lambda _: self.suggest())
        self.button.on_click(lambda _: self.run())
        super().__init__([widgets.HTML("<b>Laundry List</b>: rescale OV components, accuracy before / after"),
                          widgets.HBox([self.layer, self.head, self.components, self.scale, self.add_button]),
                          widgets.HBox([self.edits, self.suggest_button, self.button]), self.status, self.curve])

    def follow(self, layer: int, head: int, breakdown) -> None:
        """Pre-fill the controls with the selected pair's writer and its top component."""
        self.layer.value, self.head.value = layer, head
        self.components.value = str(int(breakdown.share.idxmax()))

    def intervention(self) -> tuple[int, int, tuple[int, ...], float]:
        return (self.layer.value, self.head.value, _ints(self.components.value), float(self.scale.value))

    def add(self) -> None:
        self.edits.value = format_edits((*parse_edits(self.edits.value), self.intervention()))

    def _controls(self) -> tuple:
        return (self.layer, self.head, self.components, self.scale, self.edits, self.add_button, self.suggest_button,
                self.button)

    def suggest(self, n: int = 5) -> None:
        keep = {k: v for k, v in self.options.items() if k in ("templates", "items", "item_prefix", "fold_norm")}

        def scan() -> None:
            found = self._scan(self.model, seed=int(self.options.get("seed", 0)) + 1, **keep)
            self.edits.value = format_edits(found.edits(n))

        self.status.run("first-order scan", scan, controls=self._controls())

    def run(self):
        """Run the Laundry List on the edits (or the one intervention the controls describe); None when it failed
        (the reason is in :attr:`status`)."""
        def laundry():
            edits = parse_edits(self.edits.value) or (self.intervention(),)
            result = self._run(self.model, interventions=edits, **self.options)
            replace_figure(self.curve, render.laundry_figure(result))
            return result

        return self.status.run("Laundry List", laundry, controls=self._controls())
