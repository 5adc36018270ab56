"""Write-once folders: built in a private temp folder, then renamed into place."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Callable


def atomic_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it with ``build(tmp)`` first if it does not exist.

    ``rename`` of a folder is atomic, so readers see either nothing or the whole
    thing; when two processes build at once, the first rename wins and the other
    discards its copy. An interrupted build leaves only a stray ``.tmp-*`` folder.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
