"""Analyses: pure computations on a HookedModel, returning frozen Results. No plotting here."""

from . import overview
from .registry import Analysis, get_analysis, list_analyses, register_analysis
from .runner import make_config, run_analysis

register_analysis(overview.ANALYSIS)

# --- talking heads (issue 4) ---
from . import talking_heads as _talking_heads  # noqa: E402

register_analysis(_talking_heads.ANALYSIS)


def head_composition(model, config: "_talking_heads.HeadCompositionConfig | None" = None, *, cache=True, **options):
    """Q/K/V composition between every writer head and later reader head, whole-head and per SVD
    component of the writer's OV circuit, with head spectra and a random-matrix null baseline.

    Options: see :class:`~workbench.analyses.talking_heads.HeadCompositionConfig`. Cached.
    """
    return run_analysis("head_composition", model, config, cache=cache, **options)


from . import head_effects as _head_effects, laundry_list as _laundry_list  # noqa: E402

register_analysis(_head_effects.ANALYSIS)
register_analysis(_laundry_list.ANALYSIS)


def head_effects(model, config: "_head_effects.HeadEffectsConfig | None" = None, *, cache=True, **options):
    """Ablate writer heads / OV components on prompts and measure each later reader's Q/K/V effect,
    side by side with the weight-based composition scores and their correlation.

    Options (e.g. ``prompts=(...)``, ``writers=((layer, head, component), ...)``, component -1 = whole
    head): see :class:`~workbench.analyses.head_effects.HeadEffectsConfig`. Cached.
    """
    return run_analysis("head_effects", model, config, cache=cache, **options)


def laundry_list(model, config: "_laundry_list.LaundryListConfig | None" = None, *, cache=True, **options):
    """Laundry List recall accuracy vs list length, optionally with OV components rescaled
    (``interventions=((layer, head, (component, ...), scale), ...)``); the model is restored after.

    Options: see :class:`~workbench.analyses.laundry_list.LaundryListConfig`. Cached.
    """
    return run_analysis("laundry_list", model, config, cache=cache, **options)


laundry_component_scan = _laundry_list.component_attribution  # which OV components to rescale (first-order scan)
# --- end talking heads ---


# --- bilinear MLPs (issue 5) ---
from .bilinear import replacement as _bl_replacement, spectrum as _bl_spectrum, training as _bl_training  # noqa: E402
from .bilinear.api import bilinear_replacement, bilinear_spectrum, train_bilinear_lm, train_digits, train_toy  # noqa: E402

for _analysis in (_bl_spectrum.ANALYSIS, _bl_replacement.ANALYSIS, *_bl_training.ANALYSES):
    register_analysis(_analysis)
# --- end bilinear ---


# --- super weights (issue 3) ---
from . import super_weights as _super_weights  # noqa: E402  (public functions: super_weights.api, exported by workbench)

for _analysis in _super_weights.ANALYSES:
    register_analysis(_analysis)
# --- end super weights ---


# --- attribution (issue 6) ---
from . import attribution as _attribution  # noqa: E402
from .attribution import attribute, compare_attributions, reagent  # noqa: E402

for _analysis in _attribution.ANALYSES:
    register_analysis(_analysis)
# --- end attribution ---


def model_overview(model, config: overview.OverviewConfig | None = None, *, cache=True, **options) -> overview.OverviewResult:
    """Architecture card, parameter counts and per-layer weight statistics of ``model``.

    Options: see :class:`~workbench.analyses.overview.OverviewConfig`. Cached by model
    fingerprint and config; ``cache=False`` recomputes.
    """
    return run_analysis("overview", model, config, cache=cache, **options)


__all__ = ["Analysis", "bilinear_replacement", "bilinear_spectrum", "get_analysis", "head_composition", "head_effects", "laundry_component_scan", "laundry_list", "list_analyses", "make_config", "model_overview", "register_analysis", "run_analysis", "train_bilinear_lm", "train_digits", "train_toy"]
