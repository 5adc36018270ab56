"""Token attribution: ReAGent (our batched implementation), baseline methods, faithfulness metrics.

``common``: the attributed sequence and its targets (``vocab``: the special tokens); ``reagent``: the ``reagent``
analysis (``replacers``, ``draws``: its token replacements and their random draws; ``pos_tags``: the offline
part-of-speech table of ``replacer="pos"``); ``baselines``: gradient, attention and occlusion
methods, the ``attribution`` analysis; ``faithfulness``: Soft-NS / Soft-NC and hard metrics; ``compare``: the
``compare_attributions`` analysis; ``result``: the Result they share; ``agreement``, ``prompts``: for tests and
benchmarks; ``api``: the public functions ``reagent``, ``attribute``, ``compare_attributions`` (what ``workbench``
exports: ``api.__all__``). The package re-exports none of them: ``attribution.reagent`` is the module.
"""

from . import api, baselines, compare, reagent
from .baselines import AttributeConfig, BaselineResult
from .compare import ALL_METHODS, CompareConfig, ComparisonResult
from .faithfulness import faithfulness, summarise
from .reagent import ReagentConfig, ReagentResult
from .replacers import MaskedLM
from .result import AttributionResult

ANALYSES = (reagent.ANALYSIS, baselines.ANALYSIS, compare.ANALYSIS)

__all__ = [
    "ALL_METHODS", "ANALYSES", "AttributeConfig", "AttributionResult", "BaselineResult", "CompareConfig",
    "ComparisonResult", "MaskedLM", "ReagentConfig", "ReagentResult", "api", "baselines", "compare",
    "faithfulness", "reagent", "summarise",
]
