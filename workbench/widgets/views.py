"""The built-in explorers, one line per Result type (subclasses not listed open their parent's)."""

from __future__ import annotations

from ..analyses.attribution.compare import ComparisonResult
from ..analyses.attribution.result import AttributionResult
from ..analyses.bilinear.spectrum import BilinearSpectrumResult
from ..analyses.heads.composition import HeadCompositionResult
from ..analyses.overview.card import OverviewResult
from ..analyses.super_weights.detect import SuperWeightResult
from ..analyses.super_weights.trace import TraceResult
from ..results import Result
from .attribution import AttributionWidget, ComparisonWidget
from .bilinear import BilinearWidget
from .generic import FiguresView
from .heads import HeadCompositionWidget
from .overview import OverviewWidget
from .explorer_table import register_widget
from .super_weights import SuperWeightWidget, TraceView

register_widget(Result, FiguresView)  # the fallback: summary and figures
register_widget(OverviewResult, OverviewWidget)
register_widget(SuperWeightResult, SuperWeightWidget)
register_widget(TraceResult, TraceView)
register_widget(HeadCompositionResult, HeadCompositionWidget)
register_widget(BilinearSpectrumResult, BilinearWidget)
register_widget(AttributionResult, AttributionWidget)
register_widget(ComparisonResult, ComparisonWidget)
