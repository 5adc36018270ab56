"""Results -> plotly figures and HTML. Pure functions: no model access, no recomputation.

Views are registered by Result type (:mod:`.registry`, built-ins in :mod:`.views`); :func:`render_html`
is the one HTML section per result that the report and the notebook repr both show.
"""

from .page import render_html
from .registry import View, register_view

__all__ = ["View", "register_view", "render_html"]
