"""The built-in views: which figures and HTML each Result type is shown with.

One table, read top to bottom; subclasses not listed are shown as their parent (every experiment
result as :class:`ExperimentResult`, the baselines as an attribution).
"""

from __future__ import annotations

from ..analyses.attribution.compare import ComparisonResult
from ..analyses.attribution.reagent import ReagentResult
from ..analyses.attribution.result import AttributionResult
from ..analyses.bilinear.replacement import BilinearReplacementResult
from ..analyses.bilinear.spectrum import BilinearSpectrumResult
from ..analyses.bilinear.training import TrainedBilinear
from ..analyses.heads.composition import HeadCompositionResult
from ..analyses.heads.effects import HeadEffectsResult
from ..analyses.heads.laundry import LaundryListResult
from ..analyses.heads.laundry_scan import LaundryScanResult
from ..analyses.overview.card import OverviewResult
from ..analyses.super_weights.detect import SuperWeightResult
from ..analyses.super_weights.experiments import ExperimentResult
from ..analyses.super_weights.experts import SuperExpertResult
from ..analyses.super_weights.trace import TraceResult
from ..distributed.series import CheckpointSeries
from . import attribution, bilinear, heads, overview, series, super_weight_trace, super_weights
from .view_table import register_view

register_view(OverviewResult, figures=overview.overview_figures, html=overview.tokens_html)
register_view(SuperWeightResult, figures=super_weights.detection_figures, html=super_weights.candidates_html)
register_view(SuperExpertResult, figures=super_weights.super_expert_figures)
register_view(ExperimentResult, figures=super_weights.experiment_figures)
register_view(TraceResult, figures=super_weight_trace.trace_figures)
register_view(HeadCompositionResult, figures=heads.composition_figures, html=heads.explanation_html)
register_view(HeadEffectsResult, figures=heads.effects_figures)
register_view(LaundryListResult, figures=heads.laundry_figures)
register_view(LaundryScanResult, figures=heads.laundry_scan_figures)
register_view(BilinearSpectrumResult, figures=bilinear.spectrum_figures)
register_view(BilinearReplacementResult, figures=bilinear.replacement_figures)
register_view(TrainedBilinear, figures=bilinear.training_figures)
register_view(AttributionResult, figures=attribution.attribution_figures, html=attribution.result_heatmaps_html)
register_view(ReagentResult, figures=attribution.reagent_figures, html=attribution.result_heatmaps_html)
register_view(ComparisonResult, figures=attribution.comparison_figures, html=attribution.comparison_html)
register_view(CheckpointSeries, figures=series.series_figures)
