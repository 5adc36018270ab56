"""Attention heads: how they compose (Elhage et al. 2021, Merullo et al. 2024), measured and on a task.

``svd``: head weights and their factored SVDs; ``scores`` / ``scores_streamed``: composition scores and
their null baselines (all at once / layer blocks at a time); ``composition``: the ``head_composition``
analysis; ``effects``: ``head_effects`` (ablations); ``laundry``: the Laundry List task (``laundry_list``);
``laundry_scan``: which OV components to rescale (``laundry_component_scan``); ``api``: the public functions
(what ``workbench`` exports: ``api.__all__``).
"""

from . import api, composition, effects, laundry, laundry_scan

ANALYSES = (composition.ANALYSIS, effects.ANALYSIS, laundry.ANALYSIS, laundry_scan.ANALYSIS)

__all__ = ["ANALYSES", "api"]
