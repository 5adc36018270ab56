"""Write-once folders: built in a private temp folder, then renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from .._tempnames import is_abandoned, unique_suffix


def atomic_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it with ``build(tmp)`` first if it does not exist.

    ``rename`` of a folder is atomic, so readers see either nothing or the whole
    thing; when two processes build at once, the first rename wins and the other
    discards its copy. An interrupted build leaves only a stray ``.tmp-*`` folder,
    named after its host and process (``workbench/_tempnames.py``) so that a cache
    shared by several hosts never loses a build still under way.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(target)
    tmp = target.parent / f".tmp-{target.name}-{unique_suffix()}"
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_orphans(target: Path) -> None:
    """Delete temp folders left by interrupted builds of ``target``: this host's whose process is gone, and
    any host's untouched for a day."""
    prefix = f".tmp-{target.name}-"
    for tmp in target.parent.glob(f"{prefix}*"):
        if is_abandoned(tmp, tmp.name.removeprefix(prefix)):
            shutil.rmtree(tmp, ignore_errors=True)
