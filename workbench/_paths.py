"""Where the workbench keeps files that are not part of the repository."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "WORKBENCH_CACHE"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$WORKBENCH_CACHE``, else ``~/.cache/workbench``."""
    if override is not None:
        root = Path(override)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workbench"
    return root.expanduser()


_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the repository's top-level data/ as workbench/data (see setup.py); a checkout,
# editable install included, reads it where it lies.
DATA_DIR = _PACKAGE / "data" if (_PACKAGE / "data").is_dir() else _PACKAGE.parent / "data"


def data_file(name: str) -> Path:
    """A file the project ships in ``data/`` (evaluation text, published indices)."""
    path = DATA_DIR / name
    if not path.is_file():
        from .errors import InputError

        raise InputError(f"data file {name!r} is missing from {DATA_DIR}; reinstall the workbench (pip install lm-workbench) "
                         "or run it from its repository")
    return path
