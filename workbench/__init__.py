"""workbench: interpretability and weight analysis for transformer language models.

``import workbench`` is cheap: the API (torch, the models, the analyses, how results are shown) is imported from
:mod:`workbench._api` the first time a public name is read (``wb.load_model``, ``wb.__all__``...), so that
``workbench report`` served from the cache (``workbench/report/pages.py``) never imports torch.
"""

import logging as _logging
from typing import TYPE_CHECKING

# cheap, and here before the API loads (``__all__`` comes with it)
from ._version import __version__  # noqa: F401
from .errors import (CacheCorruptError, InputError, MissingExtraError, ModelLoadError,  # noqa: F401
                     UnsupportedModelError, WorkbenchError)

if TYPE_CHECKING:  # what type checkers and editors see: every name, as if imported here
    from ._api import *  # noqa: F403

# Records cache hits and misses, and the device and threads of each analysis; shown only where the application
# configures logging (e.g. logging.basicConfig(level=logging.INFO)): a library adds no handler of its own.
_logging.getLogger("workbench").addHandler(_logging.NullHandler())


def _load() -> None:
    """Import the API into this module's namespace (once; later reads find the names here)."""
    from . import _api

    namespace = globals()
    namespace.update({name: getattr(_api, name) for name in _api._ALL})
    namespace["__all__"] = list(_api._ALL)


def __getattr__(name: str):
    if name.startswith("_") and name != "__all__":  # private names and dunder probes (copy, pickle, the import
        # system asking for a submodule not yet imported) do not load the API
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    _load()
    return sorted(globals())
