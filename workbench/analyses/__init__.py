"""Analyses: pure computations on a HookedModel, returning frozen Results. No plotting here.

One package per analysis, one shape: its modules hold Config, Result and compute, its ``api.py`` the public
functions (``f(model, *, config=None, cache=True, **options)``), re-exported by its ``__init__`` with its
``ANALYSES``. Every analysis is registered here, explicitly, in the order the report shows them. How they
run (registry, runner) is :mod:`workbench.engine`.
"""

from ..engine import Analysis, get_analysis, list_analyses, make_config, register_analysis, run_analysis
from . import attribution, bilinear, heads, overview, super_weights
from .attribution import attribute, compare_attributions, reagent
from .bilinear import bilinear_replacement, bilinear_spectrum, train_bilinear_lm, train_digits, train_toy
from .heads import head_composition, head_effects, laundry_component_scan, laundry_list
from .overview import model_overview
# (``wb.super_weights`` itself is exported by ``workbench``: here the name is the subpackage's)
from .super_weights import (prune_outliers, prune_super_weights, quantize_super_weights, scale_super_weights,
                                super_experts, trace_super_weight)

for _analysis in (*overview.ANALYSES, *super_weights.ANALYSES, *heads.ANALYSES, *bilinear.ANALYSES,
                  *attribution.ANALYSES):
    register_analysis(_analysis)

__all__ = [
    "Analysis", "attribute", "bilinear_replacement", "bilinear_spectrum", "compare_attributions",
    "get_analysis", "head_composition", "head_effects", "laundry_component_scan", "laundry_list", "list_analyses",
    "make_config", "model_overview", "prune_outliers", "prune_super_weights", "quantize_super_weights", "reagent",
    "register_analysis", "run_analysis", "scale_super_weights", "super_experts", "trace_super_weight",
    "train_bilinear_lm", "train_digits", "train_toy",
]
