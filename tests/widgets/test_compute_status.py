"""An explorer's computation, without a browser: progress and failures shown in the widget, controls given back
(the same in real JupyterLab: tests/widgets/test_jupyterlab.py)."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

import workbench as wb
from workbench.widgets._compute import ComputeStatus

from support.planted import planted_super_weight


def test_while_running_the_controls_are_off_and_the_status_says_so():
    status, button, picker = ComputeStatus(), widgets.Button(description="go"), widgets.Dropdown(options=[1, 2])
    seen = {}

    def work():
        seen.update(button=(button.description, button.disabled), picker=picker.disabled, line=status.value)
        return 42

    assert status.run("summing", work, controls=(picker,), button=button) == 42
    assert seen == {"button": ("computing...", True), "picker": True, "line": seen["line"]}
    assert "summing..." in seen["line"] and "done in" in status.value and status.failed is None
    assert (button.description, button.disabled, picker.disabled) == ("go", False, False)


class _Shell:
    """Enough of an IPython shell for ipywidgets' Output: in a kernel, an exception that reaches an output area is
    printed there and swallowed."""

    kernel = None

    def __init__(self):
        self.tracebacks = []

    def showtraceback(self, exc_tuple, tb_offset=None):
        self.tracebacks.append(exc_tuple[1])


@pytest.fixture(params=["plain", "kernel"])
def shell(request, monkeypatch):
    if request.param == "plain":
        return None
    from ipywidgets.widgets import widget_output

    fake = _Shell()
    monkeypatch.setattr(widget_output, "get_ipython", lambda: fake)
    return fake


@pytest.mark.parametrize("error", [wb.InputError("the prompt is <empty>\nmore"), RuntimeError("boom")])
def test_a_failure_is_shown_and_the_controls_come_back(error, shell):
    status, button = ComputeStatus(), widgets.Button(description="go")
    already_off = widgets.Dropdown(options=[1], disabled=True)

    def work():
        raise error

    assert status.run("tracing", work, controls=(already_off,), button=button) is None  # never raised
    assert status.failed is error
    assert "tracing failed" in status.value and str(error).splitlines()[0].replace("<", "&lt;").replace(">", "&gt;") \
        in status.value and "more" not in status.value
    assert (button.description, button.disabled) == ("go", False)
    assert already_off.disabled  # what was off before stays off
    assert shell is None or shell.tracebacks == []  # never left to the output area, which would swallow it


FAST = {"n_probes": 2, "max_steps": 3, "max_new_tokens": 1}


def test_attribution_explorer_survives_a_failed_method(tiny_llama, monkeypatch):
    from workbench.analyses.attribution import api as attribution

    explorer = wb.reagent(tiny_llama, prompt="ab", cache=False, **FAST).widget(model=tiny_llama)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(attribution, "attribute", broken)
    explorer.method.value = "occlusion"
    assert "failed: out of memory" in explorer.status.value
    assert explorer.method.value == "reagent" and explorer.result.method == "reagent"  # what is shown, still named
    assert not explorer.method.disabled and not explorer.target.disabled
    monkeypatch.undo()
    explorer.method.value = "occlusion"  # and it works again
    assert explorer.result.method == "occlusion" and "done in" in explorer.status.value


def test_scale_sweep_button_comes_back_after_a_failure(monkeypatch):
    from workbench.analyses.super_weights import api

    model, _ = planted_super_weight()
    explorer = wb.super_weights(model, eval_windows=2, window=32, cache=False).widget(model=model)
    assert not explorer.compute_button.disabled

    def broken(*args, **kwargs):
        raise wb.InputError("no room for the sweep")

    monkeypatch.setattr(api, "scale_super_weights", broken)
    explorer.compute_button.click()
    assert "no room for the sweep" in explorer.sweep_status.value
    assert explorer.compute_button.description == "compute scale sweep" and not explorer.compute_button.disabled
    assert explorer.scale.disabled  # no sweep, so no slider
