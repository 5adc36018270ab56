"""The four explorers in real JupyterLab: notebooks/explorers.ipynb run in a server started here and
opened in headless Chromium; every explorer renders (widget views, drawn plotly figures: the kernel's first
FigureWidget carries plotly's code, every other one uses it from the page) and a control change updates its
view; a failed computation is shown inside its explorer, whose controls come back; two results shown bare
draw their figures with one plotly.js, carried by the first.

The latency of each control change (in the page: change dispatched -> last DOM mutation of the
view) is printed and recorded as a test property; nothing asserts on it. For repeated figures and
the Python-only side, run ``benchmarks/widgets.py``. Skipped without /usr/bin/chromium or Playwright.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.jupyterlab_session import Control, browser_available, lab_session

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "explorers.ipynb"
# explorer -> a text only its cell's source contains
MARKERS = {
    "super_weights": "sw.widget(",
    "heads": "comp.widget(",
    "bilinear": "spectrum.widget(",
    "reagent": "attribution.widget(",
}
CONTROLS = (
    Control("super_weights", "candidate"),
    Control("heads", "kind", "toggle"),
    Control("bilinear", "direction"),
    Control("reagent", "target"),
)


# two results shown bare after the explorers: the first output with figures carries plotly.js, the next uses it
BARE = {"bare_first": "sw  # shown bare", "bare_later": "comp  # shown bare"}

_PLOTLY_COPIES_JS = """(markers) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const copies = {};
  for (const cell of panel.content.widgets) {
    const source = cell.model.sharedModel.getSource();
    for (const [name, text] of Object.entries(markers)) {
      if (source.includes(text)) copies[name] = JSON.stringify(cell.model.outputs.toJSON()).split("plotly.js v").length - 1;
    }
  }
  return copies;
}"""


def _with_bare_results(folder: Path) -> Path:
    """explorers.ipynb with the :data:`BARE` cells appended."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(text) for text in BARE.values()]
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = browser_available()
    if reason:
        pytest.skip(reason)
    notebook = _with_bare_results(tmp_path_factory.mktemp("notebook"))
    with lab_session(notebook, tmp_path_factory.mktemp("jupyterlab")) as page:
        seconds = page.run_all()
        print(f"\nexplorers.ipynb ran in JupyterLab in {seconds:.1f} s")
        yield page


@pytest.mark.browser
@pytest.mark.real
def test_every_explorer_renders(lab):
    assert sorted(lab.mark_explorers(MARKERS)) == sorted(MARKERS)
    for name in MARKERS:
        state = lab.wait_rendered(name)
        assert state is not None, f"{name}: no output area"
        assert "Error displaying widget" not in state["text"], f"{name}: {state['text'][:500]}"
        assert state["views"] > 0, f"{name}: no ipywidgets view"
        assert state["controls"] > 0, f"{name}: no controls rendered"
        assert state["plots"] > 0 and state["drawn"] == state["plots"], f"{name}: figures not drawn: {state}"
        assert state["with_data"] > 0, f"{name}: every figure is empty"
        assert state["contained"] == state["plots"], f"{name}: a figure's redraw would lay out the page: {state}"


@pytest.mark.browser
@pytest.mark.real
@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"{c.explorer}-{c.description}")
def test_control_change_updates_view(lab, control, record_property):
    lab.mark_explorers(MARKERS)
    assert lab.wait_rendered(control.explorer) is not None
    result = lab.change(control)
    assert "error" not in result, result["error"]
    assert result["changed"], f"{control}: the view did not change after choosing {result['chosen']!r}"
    record_property("latency_ms", round(result["last_ms"], 1))
    print(f"\n{control.explorer} / {control.description} -> {result['chosen']!r}: "
          f"first update {result['first_ms']:.0f} ms, settled {result['last_ms']:.0f} ms")
    # once more: the control keeps working
    again = lab.change(control)
    assert "error" not in again and again["changed"], again
    assert not [m for m in lab.console if m.startswith("pageerror")], lab.console


@pytest.mark.browser
@pytest.mark.real
def test_linked_trace_from_the_super_weight_explorer(lab, record_property):
    # Across analyses: the picked super weight, traced to the heads that drive and read it.
    lab.mark_explorers(MARKERS)
    result = lab.change(Control("super_weights", "trace this weight", "button"))
    assert "error" not in result, result["error"]
    assert result["changed"], "the trace view did not fill in"
    state = lab.wait_rendered("super_weights")
    assert "down_proj" in state["text"] and state["drawn"] == state["plots"], state
    record_property("latency_ms", round(result["last_ms"], 1))
    print(f"\nsuper_weights / trace this weight: settled {result['last_ms']:.0f} ms (computed, then cached)")


@pytest.mark.browser
@pytest.mark.real
def test_failed_computation_is_shown_in_the_explorer(lab):
    # A computation that fails (an empty prompt to trace) says so inside the explorer and gives its button back.
    lab.mark_explorers(MARKERS)
    prompt = lab.fill("super_weights", "prompt", "")
    try:
        result = lab.change(Control("super_weights", "trace this weight", "button"))
        assert "error" not in result, result["error"]
        assert result["changed"], "nothing in the explorer said the trace failed"
        failure = lab.wait_html_text("super_weights", "failed")
        assert failure is not None and "non-empty" in failure, lab.html_texts("super_weights")
        deadline = time.monotonic() + 10  # the button comes back right after the status line
        while lab.button("super_weights", "trace this weight") != {"disabled": False} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lab.button("super_weights", "trace this weight") == {"disabled": False}
    finally:
        lab.fill("super_weights", "prompt", prompt)
    again = lab.change(Control("super_weights", "trace this weight", "button"))  # and it works again
    assert "error" not in again and again["changed"], again
    assert lab.wait_html_text("super_weights", "done in") is not None, lab.html_texts("super_weights")
    assert not [t for t in lab.html_texts("super_weights") if "failed" in t]
    assert not [m for m in lab.console if m.startswith("pageerror")], lab.console


@pytest.mark.browser
@pytest.mark.real
def test_bare_results_share_one_plotly_js(lab):
    assert sorted(lab.mark_explorers(BARE)) == sorted(BARE)
    for name in BARE:
        deadline, state = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            state = lab.rendered(name)
            if state and state["plots"] and state["drawn"] == state["plots"]:
                break
            time.sleep(0.25)
        assert state and state["plots"] > 0 and state["drawn"] == state["plots"], f"{name}: {state}"
    copies = lab.page.evaluate(_PLOTLY_COPIES_JS, BARE)
    assert copies == {"bare_first": 1, "bare_later": 0}, copies  # plotly.js once


@pytest.mark.browser
@pytest.mark.real
def test_page_stays_offline(lab):
    assert lab.refused == []  # JupyterLab and the widgets asked for nothing but the local server
