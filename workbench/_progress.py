"""One switch for every progress bar: ``WORKBENCH_PROGRESS=0`` or ``workbench.set_progress(False)``."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_enabled = os.environ.get("WORKBENCH_PROGRESS", "1") != "0"


def set_progress(enabled: bool) -> None:
    """Turn the workbench's progress bars on or off for this process."""
    global _enabled
    _enabled = bool(enabled)


def progress(iterable=None, *, desc: str, total: int | None = None, enabled: bool = True):
    """A tqdm bar that disappears when done, unless progress bars are switched off."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not (_enabled and enabled))
