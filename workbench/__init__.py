"""workbench: interpretability and weight analysis for transformer language models."""

import logging as _logging

from ._version import __version__
from .errors import (CacheCorruptError, InputError, MissingExtraError, ModelLoadError, UnsupportedModelError,
                     WorkbenchError)
from .models import CheckpointWeights, HookedModel, ModelInfo, available_models, hook_names, load_model, load_weights
from ._progress import set_progress
from .engine import get_analysis, list_analyses, register_analysis, run_analysis
from .analyses import model_overview  # (importing workbench.analyses registers every analysis)
# the analyses after the overview, each package's public functions (its api.py)
from .analyses.super_weights import (
    prune_outliers, prune_super_weights, quantize_super_weights, scale_super_weights, super_experts, super_weights,
    trace_super_weight,
)
from .analyses.heads import head_composition, head_effects, laundry_component_scan, laundry_list
from .analyses.bilinear import (BilinearMLP, bilinear_replacement, bilinear_spectrum, train_bilinear_lm, train_digits,
                                train_toy)
from .analyses.attribution import MaskedLM, attribute, compare_attributions, reagent
from .cache import ResultCache, clear_cache, get_cache
from .report import build_report, report
from .results import Result
from . import render, widgets  # noqa: F401  (install how results are shown: figures, HTML, explorers)

# Records cache hits and misses, and the device and threads of each analysis; shown only where the application
# configures logging (e.g. logging.basicConfig(level=logging.INFO)): a library adds no handler of its own.
_logging.getLogger("workbench").addHandler(_logging.NullHandler())

__all__ = [
    "CacheCorruptError", "CheckpointWeights", "HookedModel", "InputError", "MissingExtraError", "ModelInfo", "ModelLoadError", "Result", "ResultCache",
    "UnsupportedModelError", "WorkbenchError", "__version__", "available_models", "build_report", "clear_cache",
    "get_analysis", "get_cache", "hook_names", "list_analyses", "load_model", "load_weights", "model_overview", "register_analysis",
    "report", "run_analysis", "set_progress",
    "prune_outliers", "prune_super_weights", "quantize_super_weights", "scale_super_weights", "super_experts",
    "super_weights",
    "trace_super_weight",
    "head_composition", "head_effects", "laundry_component_scan", "laundry_list",
    "BilinearMLP", "bilinear_replacement", "bilinear_spectrum", "train_bilinear_lm", "train_digits", "train_toy",
    "MaskedLM", "attribute", "compare_attributions", "reagent",
]
