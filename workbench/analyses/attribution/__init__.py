"""Token attribution: ReAGent (our batched implementation), baseline methods, faithfulness metrics.

``common``: the attributed sequence and its targets; ``reagent``: the ``reagent`` analysis (``replacers``,
``draws``: its token replacements and their random draws); ``baselines``: gradient, attention and occlusion
methods, the ``attribution`` analysis; ``faithfulness``: Soft-NS / Soft-NC and hard metrics; ``compare``: the
``compare_attributions`` analysis; ``result``: the Result they share; ``agreement``, ``prompts``: for tests and
benchmarks; ``api``: the public functions :func:`reagent`, :func:`attribute`, :func:`compare_attributions`.
"""

from . import baselines, compare
from .baselines import AttributeConfig, BaselineResult
from .compare import ALL_METHODS, CompareConfig, ComparisonResult
from .faithfulness import faithfulness, summarise
from .reagent import ANALYSIS as _REAGENT, ReagentConfig, ReagentResult
from .replacers import MaskedLM
from .result import AttributionResult
from .api import attribute, compare_attributions, reagent  # last: ``reagent`` here is the function, not the module

ANALYSES = (_REAGENT, baselines.ANALYSIS, compare.ANALYSIS)

__all__ = [
    "ALL_METHODS", "ANALYSES", "AttributeConfig", "AttributionResult", "BaselineResult", "CompareConfig",
    "ComparisonResult", "MaskedLM", "ReagentConfig", "ReagentResult", "attribute", "compare_attributions",
    "faithfulness", "reagent", "summarise",
]
