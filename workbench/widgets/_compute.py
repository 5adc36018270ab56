"""What every explorer does when a control starts a computation: say so in the widget, show its progress
bars and warnings there, show a failure there too, and give the controls back whatever happened.

A button callback runs in the kernel; what it prints, warns or raises goes to JupyterLab's log console,
where nobody looks, and a raise in the middle leaves the explorer half-updated. :class:`ComputeStatus` is
a status line plus an output area: the callback runs inside the output area (tqdm's notebook bars and
warnings land there), an exception becomes one line in the status (a traceback in the output area when it
is not a :class:`~workbench.errors.WorkbenchError`, i.e. not the user's input), and the controls it disabled
get their state back in a ``finally``.
"""

from __future__ import annotations

import html
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from ..errors import WorkbenchError

BUSY_STYLE = "color:#555"
ERROR_STYLE = "color:#b00"


class ComputeStatus(widgets.VBox):
    """A status line and an output area (progress bars, warnings) for an explorer's computations."""

    def __init__(self) -> None:
        self.line = widgets.HTML()
        self.output = widgets.Output()
        self.failed: BaseException | None = None  # the last computation's exception, if it failed
        super().__init__([self.line, self.output])

    @property
    def value(self) -> str:
        """The status line's HTML (what a user reads: the step running, its time, or what went wrong)."""
        return self.line.value

    def run(self, what: str, work: Callable[[], Any], *, controls: Sequence[widgets.Widget] = (),
            button: widgets.Button | None = None, busy: str = "computing...") -> Any:
        """``work()`` with ``controls`` (and ``button``) disabled and ``button`` saying ``busy``; returns its
        value, or None when it raised (the error is shown here, never raised into the front end)."""
        touched = [*controls, *([button] if button is not None else [])]
        before = [(c, c.disabled) for c in touched]
        label = button.description if button is not None else None
        for control in touched:
            control.disabled = True
        if button is not None:
            button.description = busy
        self.failed = None
        self.output.clear_output()
        self.line.value = f"<span style='{BUSY_STYLE}'>{html.escape(what)}...</span>"
        start = time.perf_counter()
        try:
            error = None
            with self.output:  # in a kernel, an exception reaching the output area would be printed and swallowed
                try:
                    value = work()
                except Exception as exc:  # shown in the widget: a failed computation must not break the explorer
                    error = exc
            if error is None:
                self.line.value = (f"<span style='{BUSY_STYLE}'>{html.escape(what)}: "
                                   f"done in {time.perf_counter() - start:.1f} s</span>")
                return value
            self.failed = error
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.line.value = f"<span style='{ERROR_STYLE}'>{html.escape(what)} failed: {html.escape(first)}</span>"
            if not isinstance(error, WorkbenchError):  # a bug, not a bad input: keep the traceback at hand
                with self.output:
                    print("".join(traceback.format_exception(error)))
            return None
        finally:
            for control, disabled in before:
                control.disabled = disabled
            if button is not None and label is not None:
                button.description = label
