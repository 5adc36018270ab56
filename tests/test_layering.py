"""The data flow runs one way: analyses never import how results are shown, and results never change."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
SHOWING = ("workbench.render", "workbench.widgets", "plotly", "ipywidgets")


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (relative imports resolved), lazily inside functions or not."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_analyses_never_import_render_or_widgets():
    offenders = {str(path.relative_to(PACKAGE)): name
                 for path in (PACKAGE / "analyses").rglob("*.py")
                 for name in _imports(path) if name.startswith(SHOWING)}
    assert not offenders


def test_results_import_nothing_that_shows_them():
    """Display is installed from outside (render/ and widgets/ fill ``results.DISPLAY`` when imported)."""
    shown = {name for name in _imports(PACKAGE / "results.py") if name.startswith(SHOWING)}
    assert not shown, shown
    assert not [name for name in _imports(PACKAGE / "results.py") if name.startswith("workbench.analyses")]


def test_display_is_installed_by_importing_workbench():
    import workbench  # noqa: F401
    from workbench import render, results, widgets

    assert results.DISPLAY.figures is render.figures
    assert results.DISPLAY.html is render.notebook_html
    assert results.DISPLAY.widget is widgets.widget


def test_no_result_contents_are_changed_after_construction():
    mutation = re.compile(r"\.(meta|tensors|tables)(\[[^\]]+\]\s*=[^=]|\.(update|setdefault|pop)\()")
    offenders = [f"{path.relative_to(PACKAGE)}:{i}" for path in PACKAGE.rglob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if mutation.search(line)]
    assert not offenders


def test_meta_is_read_through_typed_accessors_only():
    """Views, explorers, commands and analyses read a result's ``meta`` through its accessors, never by key."""
    lookup = re.compile(r"(?<!self)\.meta(\[|\.get\()")
    offenders = [f"{path.relative_to(PACKAGE)}:{i}" for path in PACKAGE.rglob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if lookup.search(line)]
    assert not offenders
