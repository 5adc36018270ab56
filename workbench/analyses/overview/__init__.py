"""The model overview: architecture card, parameter counts, per-layer weight spectra (``card``); ``api``: the
public function (what ``workbench`` exports: ``api.__all__``)."""

from . import api, card

ANALYSES = (card.ANALYSIS,)

__all__ = ["ANALYSES", "api", "card"]
