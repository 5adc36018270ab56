"""Loading a model never installs or changes packages, whatever a dependency tries.

TransformerLens' bridge, booting a multimodal checkpoint, runs ``pip install torchvision`` (or ``uv pip
install``) when its image processor cannot load; in a researcher's environment that can replace their torch
mid-load. :func:`no_installs` holds two guards while a model loads:

- the bridge's installing helper is replaced by one that only imports (the processor is for images; the
  workbench reads text, so the model loads without it);
- an audit hook (:func:`sys.addaudithook`, the interpreter's own report of every process start) refuses to
  start a package installer (pip, uv, conda, ...) or to import pip, from any code, raising
  :class:`InstallRefused` instead. Attempts are recorded, so a load that then fails can say what was needed.

Audit hooks cannot be removed: the hook is added on the first load and does nothing outside a load.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ModelLoadError

INSTALLERS = frozenset({"pip", "pip3", "uv", "conda", "mamba", "micromamba", "easy_install", "pipx", "poetry"})
INSTALL_WORDS = frozenset({"install", "add", "sync", "update", "upgrade"})

_lock = threading.Lock()
_active = 0  # loads in progress (nested or in threads)
_hooked = False
_original = None  # the bridge's own helper while ours stands in for it
refused: list[str] = []  # the commands refused during the current loads, for error messages


class InstallRefused(ModelLoadError):
    """A dependency tried to install a package while a model loaded."""


@contextmanager
def no_installs() -> Iterator[list[str]]:
    """Within the block no package installer can start and the bridge installs nothing; yields the list of
    refused commands (empty when nothing was tried)."""
    global _active, _hooked, _original
    with _lock:
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True
        if _active == 0:
            refused.clear()
            _original = _swap_bridge_installer(_importable_torchvision)
        _active += 1
    try:
        yield refused
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _original is not None:
                _swap_bridge_installer(_original)
                _original = None


def _swap_bridge_installer(replacement):
    """Put ``replacement`` in place of TransformerLens' ``_ensure_torchvision`` (which installs on the fly);
    return what was there (None where this TransformerLens has no such helper: the audit hook still refuses)."""
    try:
        from transformer_lens.model_bridge.sources.transformers import helpers
    except ImportError:
        return None
    original = getattr(helpers, "_ensure_torchvision", None)
    if original is not None:
        helpers._ensure_torchvision = replacement
    return original


def _importable_torchvision() -> bool:
    """True when torchvision imports as installed; never installs it."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        refused.append("torchvision (for the image processor of a multimodal checkpoint; not needed for text)")
        return False
    return True


def is_install_command(command) -> bool:
    """True for a command line (a string or an argument list) that runs a package installer's install."""
    parts = [command] if isinstance(command, bytes | str | os.PathLike) else command
    words = [word for part in parts for word in shlex.split(os.fsdecode(part))]  # `sh -c "pip install x"` too
    names = [os.path.basename(word).lower() for word in words]
    runs_installer = any(name in INSTALLERS or name.startswith(("pip3.", "pip-")) for name in names)
    return runs_installer and any(name in INSTALL_WORDS for name in names)


def _audit(event: str, args: tuple) -> None:
    if not _active:
        return
    if event == "import":
        if str(args[0]).partition(".")[0] == "pip":
            _refuse(f"import {args[0]}")
        return
    command = {"subprocess.Popen": 1, "os.system": 0, "os.exec": 1, "os.posix_spawn": 1, "os.spawn": 2}.get(event)
    if command is None:
        return
    try:
        installs = is_install_command(args[command])
    except (ValueError, TypeError):  # an argument list we cannot read: not an installer we know
        return
    if installs:
        _refuse(str(args[command]))


def _refuse(what: str) -> None:
    refused.append(what)
    raise InstallRefused(f"refused to run {what!r} while loading a model: the workbench never installs or "
                         "changes packages; install what the model needs yourself")
