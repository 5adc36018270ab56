"""Results -> plotly figures and HTML. Pure functions: no model access, no recomputation.

Views are registered by Result type (:mod:`.registry`, built-ins in :mod:`.views`); :func:`render_html`
is the one HTML section per result that the report and the notebook repr both show.
"""

from ..results import install_display
from .page import notebook_html, render_html
from .registry import View, figures, register_view

# results show themselves through these (results.py never imports render/)
install_display(figures=figures, html=notebook_html)

__all__ = ["View", "register_view", "render_html"]
