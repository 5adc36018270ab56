"""The public functions of the attention-head analyses (``__all__``: what ``workbench`` exports, ``wb.head_composition``, ...).

Each is ``f(model, *, config=None, cache=True, **options)``: ``options`` replace fields of the config
(the defaults when ``config`` is None); the result is cached by model fingerprint and config.
"""

from __future__ import annotations

from ...engine.runner import run_analysis
from . import composition, effects, laundry, laundry_scan
from .composition import HeadCompositionConfig, HeadCompositionResult
from .effects import HeadEffectsConfig, HeadEffectsResult
from .laundry import LaundryListConfig, LaundryListResult
from .laundry_scan import LaundryScanConfig, LaundryScanResult

__all__ = ["head_composition", "head_effects", "laundry_component_scan", "laundry_list"]


def head_composition(model, *, config: HeadCompositionConfig | None = None, cache=True,
                     **options) -> HeadCompositionResult:
    """Q/K/V composition between every writer head and later reader head, whole-head and per SVD
    component of the writer's OV circuit, with head spectra and a random-matrix null baseline.

    Options: see :class:`~workbench.analyses.heads.composition.HeadCompositionConfig`.
    """
    return run_analysis(composition.ANALYSIS, model, config, cache=cache, **options)


def head_effects(model, *, config: HeadEffectsConfig | None = None, cache=True, **options) -> HeadEffectsResult:
    """Ablate writer heads / OV components on prompts and measure each later reader's Q/K/V effect,
    side by side with the weight-based composition scores and their correlation.

    Options (e.g. ``prompts=(...)``, ``writers=((layer, head, component), ...)``, component -1 = whole
    head): see :class:`~workbench.analyses.heads.effects.HeadEffectsConfig`.
    """
    return run_analysis(effects.ANALYSIS, model, config, cache=cache, **options)


def laundry_list(model, *, config: LaundryListConfig | None = None, cache=True, **options) -> LaundryListResult:
    """Laundry List recall accuracy vs list length, optionally with OV components rescaled
    (``interventions=((layer, head, (component, ...), scale), ...)``); the model is restored after.

    Options: see :class:`~workbench.analyses.heads.laundry.LaundryListConfig`.
    """
    return run_analysis(laundry.ANALYSIS, model, config, cache=cache, **options)


def laundry_component_scan(model, *, config: LaundryScanConfig | None = None, cache=True,
                           **options) -> LaundryScanResult:
    """Which OV components to rescale for the Laundry List: the first-order effect of every component of
    every head on the margin (one forward and one backward pass). ``result.edits(n)`` gives the ``n`` whose
    removal helps most, as ``laundry_list(interventions=...)``.

    Options: see :class:`~workbench.analyses.heads.laundry_scan.LaundryScanConfig`.
    """
    return run_analysis(laundry_scan.ANALYSIS, model, config, cache=cache, **options)
