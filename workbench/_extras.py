"""Optional dependencies, imported where they are used: a missing one is a one-line error naming the extra
(``pip install 'lm-workbench[demos]'``), not an ImportError from deep inside a call."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

# import name -> (distribution, extra that installs it)
EXTRAS = {
    "sklearn": ("scikit-learn", "demos"),
    "ipywidgets": ("ipywidgets", "lab"),
    "anywidget": ("anywidget", "lab"),  # plotly's FigureWidget: without it plotly gives a stand-in class
    "distributed": ("distributed", "cluster"),  # Dask's scheduler and workers: wb.distributed
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRAS`) for ``purpose``, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist, extra = EXTRAS[module]
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed: pip install 'lm-workbench[{extra}]'"
        ) from exc
