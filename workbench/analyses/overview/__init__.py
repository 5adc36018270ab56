"""The model overview: architecture card, parameter counts, per-layer weight spectra (``card``); ``api``: the
public function."""

from . import card
from .api import model_overview

ANALYSES = (card.ANALYSIS,)

__all__ = ["ANALYSES", "model_overview"]
