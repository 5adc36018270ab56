"""Analyses: pure computations on a HookedModel, returning frozen Results. No plotting here.

Every analysis is registered here, explicitly, in the order the report shows them.
"""

from . import attribution, bilinear, heads_api, overview, super_weights
from .attribution import attribute, compare_attributions, reagent
from .bilinear.api import bilinear_replacement, bilinear_spectrum, train_bilinear_lm, train_digits, train_toy
from .heads_api import head_composition, head_effects, laundry_component_scan, laundry_list
from .registry import Analysis, get_analysis, list_analyses, register_analysis
from .runner import make_config, run_analysis
# (``wb.super_weights`` itself is exported by ``workbench``: here the name is the subpackage's)
from .super_weights.api import prune_outliers, prune_super_weights, quantize_super_weights, scale_super_weights

for _analysis in (overview.ANALYSIS, *super_weights.ANALYSES, *heads_api.ANALYSES, *bilinear.ANALYSES,
                  *attribution.ANALYSES):
    register_analysis(_analysis)


def model_overview(model, config: overview.OverviewConfig | None = None, *, cache=True, **options) -> overview.OverviewResult:
    """Architecture card, parameter counts and per-layer weight statistics of ``model``.

    Options: see :class:`~workbench.analyses.overview.OverviewConfig`. Cached by model
    fingerprint and config; ``cache=False`` recomputes.
    """
    return run_analysis("overview", model, config, cache=cache, **options)


__all__ = [
    "Analysis", "attribute", "bilinear_replacement", "bilinear_spectrum", "compare_attributions",
    "get_analysis", "head_composition", "head_effects", "laundry_component_scan", "laundry_list", "list_analyses",
    "make_config", "model_overview", "prune_outliers", "prune_super_weights", "quantize_super_weights", "reagent",
    "register_analysis", "run_analysis", "scale_super_weights", "train_bilinear_lm", "train_digits", "train_toy",
]
