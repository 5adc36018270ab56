"""Everything ``workbench`` exports: imported by ``workbench/__init__.py`` on first use of a public name.

``import workbench`` itself is cheap (no torch): this module is what it used to import, and what ``wb.<name>``
imports the first time any such name is read (``workbench.__getattr__``). Importing it also installs how
results are shown (``render``, ``widgets``) and registers every analysis.

No ``__all__`` here: ``workbench/__init__.py`` star-imports this module for type checkers and the API reference
(griffe), which then see every public name imported below; :data:`_ALL` is ``workbench.__all__``.
"""
# ruff: noqa: F401  (every import is an export)

from ._version import __version__
from .errors import (CacheCorruptError, InputError, MissingExtraError, ModelLoadError, UnsupportedModelError,
                     WorkbenchError)
from .models import CheckpointWeights, HookedModel, ModelFacts, available_models, hook_names, load_model, load_weights
from ._progress import set_progress
from .engine import get_analysis, list_analyses, register_analysis, run_analysis
from .analyses import PACKAGES as _PACKAGES  # registers every analysis
# The analyses' public functions: each package's api.__all__, one line per package of analyses.PACKAGES
# (tests/test_registration.py checks that these are exactly the packages' exports).
from .analyses.overview.api import *  # noqa: F403
from .analyses.super_weights.api import *  # noqa: F403
from .analyses.heads.api import *  # noqa: F403
from .analyses.bilinear.api import *  # noqa: F403
from .analyses.attribution.api import *  # noqa: F403
from .cache import ResultCache, clear_cache, get_cache
from .report import build_report, report
from .results import Result
from . import render, widgets  # (install how results are shown: figures, HTML, explorers)
from . import distributed as distributed  # wb.distributed: Dask is imported only when a cluster starts

_ALL = [
    "CacheCorruptError", "CheckpointWeights", "HookedModel", "InputError", "MissingExtraError", "ModelFacts",
    "ModelLoadError", "Result", "ResultCache", "UnsupportedModelError", "WorkbenchError", "__version__",
    "available_models", "build_report", "clear_cache", "get_analysis", "get_cache", "hook_names", "list_analyses",
    "load_model", "load_weights", "register_analysis", "report", "run_analysis", "set_progress",
    *(name for _package in _PACKAGES for name in _package.api.__all__),
]
