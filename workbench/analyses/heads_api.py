"""The short public functions of the talking-heads analyses (composition, measured effects, Laundry List)."""

from __future__ import annotations

from . import head_effects as _head_effects
from . import laundry_list as _laundry_list
from . import talking_heads as _talking_heads
from .runner import run_analysis

ANALYSES = (_talking_heads.ANALYSIS, _head_effects.ANALYSIS, _laundry_list.ANALYSIS)


def head_composition(model, config: _talking_heads.HeadCompositionConfig | None = None, *, cache=True, **options):
    """Q/K/V composition between every writer head and later reader head, whole-head and per SVD
    component of the writer's OV circuit, with head spectra and a random-matrix null baseline.

    Options: see :class:`~workbench.analyses.talking_heads.HeadCompositionConfig`. Cached.
    """
    return run_analysis("head_composition", model, config, cache=cache, **options)


def head_effects(model, config: _head_effects.HeadEffectsConfig | None = None, *, cache=True, **options):
    """Ablate writer heads / OV components on prompts and measure each later reader's Q/K/V effect,
    side by side with the weight-based composition scores and their correlation.

    Options (e.g. ``prompts=(...)``, ``writers=((layer, head, component), ...)``, component -1 = whole
    head): see :class:`~workbench.analyses.head_effects.HeadEffectsConfig`. Cached.
    """
    return run_analysis("head_effects", model, config, cache=cache, **options)


def laundry_list(model, config: _laundry_list.LaundryListConfig | None = None, *, cache=True, **options):
    """Laundry List recall accuracy vs list length, optionally with OV components rescaled
    (``interventions=((layer, head, (component, ...), scale), ...)``); the model is restored after.

    Options: see :class:`~workbench.analyses.laundry_list.LaundryListConfig`. Cached.
    """
    return run_analysis("laundry_list", model, config, cache=cache, **options)


laundry_component_scan = _laundry_list.component_attribution  # which OV components to rescale (first-order scan)
