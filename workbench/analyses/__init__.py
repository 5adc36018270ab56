"""Analyses: pure computations on a model, returning frozen Results. No plotting here.

One package per analysis family, one shape: its modules hold Config, Result, compute and ``ANALYSIS``; the package
lists them in ``ANALYSES``; its ``api.py`` holds the public functions (``f(model, *, config=None, cache=True,
**options)``), and ``api.__all__`` is what ``workbench`` exports from it. :data:`PACKAGES` is the one list of the
packages, in the order the report shows them: every analysis is registered from it, here, explicitly; ``workbench``'s
exports and the ``workbench`` sub-commands (``commands/<package>.py``) follow it. How analyses run (registry,
runner) is :mod:`workbench.engine`; this package re-exports none of it.
"""

from ..engine.registry import register_analysis
from . import attribution, bilinear, heads, overview, super_weights

PACKAGES = (overview, super_weights, heads, bilinear, attribution)

for _package in PACKAGES:
    for _analysis in _package.ANALYSES:
        register_analysis(_analysis)

__all__ = ["PACKAGES"]
