"""Temporary names that stay unique when many hosts share one cache folder (NFS, a cluster's home directory),
and the rule for which leftovers may be deleted.

A name carries ``host-pid-random``: process ids repeat across hosts, and a pid alone let one node's cleanup
delete another node's write in progress. A leftover is deleted only when it is certainly dead: written on this
host by a process that no longer exists, or untouched for ``STALE_AFTER`` seconds (another host's process
cannot be asked whether it is alive).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
import time
import uuid
from pathlib import Path

STALE_AFTER = 24 * 3600.0  # a leftover of another host untouched this long is taken as abandoned


def host() -> str:
    """This host's name as it may appear in a file name (no separators or odd characters)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def unique_suffix() -> str:
    """``host-pid-random``: no other process, on this host or another, makes the same one."""
    return f"{host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary file beside it, then rename it into place: a reader finds
    the old file or the whole new one, and a failed write (the ``OSError`` is raised) leaves no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_abandoned(path: Path, suffix: str, *, now: float | None = None) -> bool:
    """True when the temporary ``path``, named with ``suffix`` (what :func:`unique_suffix` gave its writer, or
    an older ``pid-random``), belongs to no live write: this host's and its process is gone, or untouched for
    ``STALE_AFTER`` seconds."""
    parts = suffix.rsplit("-", 2)
    if len(parts) == 3 and parts[0] == host() and parts[1].isdigit() and not _alive(int(parts[1])):
        return True
    return (time.time() if now is None else now) - _last_touched(path) > STALE_AFTER


def _last_touched(path: Path) -> float:
    """Latest modification time of ``path`` and, for a folder, of its direct entries (a file being written)."""
    try:
        times = [path.stat().st_mtime]
        if path.is_dir():
            times += [entry.stat().st_mtime for entry in path.iterdir()]
    except OSError:  # removed meanwhile, or unreadable: not ours to judge
        return time.time()
    return max(times)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True
