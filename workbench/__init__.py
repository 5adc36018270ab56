"""workbench: interpretability and weight analysis for transformer language models."""

import logging as _logging

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
from . import render, widgets  # noqa: F401  (install how results are shown: figures, HTML, explorers)
from . import distributed as distributed  # wb.distributed: Dask is imported only when a cluster starts

# Records cache hits and misses, and the device and threads of each analysis; shown only where the application
# configures logging (e.g. logging.basicConfig(level=logging.INFO)): a library adds no handler of its own.
_logging.getLogger("workbench").addHandler(_logging.NullHandler())

__all__ = [
    "CacheCorruptError", "CheckpointWeights", "HookedModel", "InputError", "MissingExtraError", "ModelFacts",
    "ModelLoadError", "Result", "ResultCache", "UnsupportedModelError", "WorkbenchError", "__version__",
    "available_models", "build_report", "clear_cache", "get_analysis", "get_cache", "hook_names", "list_analyses",
    "load_model", "load_weights", "register_analysis", "report", "run_analysis", "set_progress",
    *(name for _package in _PACKAGES for name in _package.api.__all__),
]
