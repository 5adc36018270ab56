"""One switch for every progress bar: ``WORKBENCH_PROGRESS=0`` or ``workbench.set_progress(False)``."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_enabled = os.environ.get("WORKBENCH_PROGRESS", "1") != "0"


def set_progress(enabled: bool) -> None:
    """Turn the workbench's progress bars on or off for this process."""
    global _enabled
    _enabled = bool(enabled)


class _NoBar:
    """What ``progress`` hands out when bars are off: tqdm's methods as no-ops and no ``__del__``. A disabled tqdm
    still closes itself in ``__del__``, and Python swallows a Ctrl-C that lands in a finaliser ("Exception ignored
    in ... tqdm.__del__"): a loop left by an interrupt lost the next Ctrl-C that way (tests/test_interrupts.py)."""

    disable = True

    def __init__(self, iterable=None):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable=None, *, desc: str, total: int | None = None, enabled: bool = True):
    """A tqdm bar that disappears when done, unless progress bars are switched off."""
    if not (_enabled and enabled):
        return _NoBar(iterable)
    return tqdm(iterable, desc=desc, total=total, leave=False)
