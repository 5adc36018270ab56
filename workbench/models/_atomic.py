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
    _remove_orphans(target)
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


def _remove_orphans(target: Path) -> None:
    """Delete temp folders left by interrupted builds of ``target`` whose process is gone."""
    for tmp in target.parent.glob(f".tmp-{target.name}-*"):
        pid = tmp.name.removeprefix(f".tmp-{target.name}-").split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True
