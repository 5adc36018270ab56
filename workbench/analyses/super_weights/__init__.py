"""Super weights (Yu et al. 2024): detection, super activations, and weight experiments.

``detect``: the streaming, iterative scan and ablation (:func:`workbench.super_weights`);
``experiments``: prune / restore / scale / outliers / quantize, each returning a result;
``trace``: one super weight on one prompt, its drivers and readers;
``experts``: mixtures of experts: super experts, the super weights inside them, router statistics;
``quantize``: batched block-wise round-to-nearest; ``published``: the published index;
``api``: the public functions (what ``workbench`` exports: ``api.__all__``).
"""

from . import api, detect, experiments, experts, trace
from .detect import DEFAULT_PROMPTS, SuperWeightConfig, SuperWeightResult
from .published import compare_published, published_for, published_index

ANALYSES = (detect.ANALYSIS, *experiments.ANALYSES, trace.ANALYSIS, experts.ANALYSIS)

__all__ = ["ANALYSES", "DEFAULT_PROMPTS", "SuperWeightConfig", "SuperWeightResult", "api", "compare_published", "detect",
           "published_for", "published_index"]
