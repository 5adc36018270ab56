"""mkdocs hooks for the documentation site (mkdocs.yml ``hooks:``).

* The notebooks of ``notebooks/`` become pages ``notebooks/<name>.md`` as they are saved: markdown cells as
  they are, code cells as Python blocks, saved text and image outputs below them. Nothing is executed (the
  tests execute the notebooks; the docs build stays offline and takes seconds), and nothing needs nbconvert.
* The API reference must document every name of ``workbench.__all__``: a name missing from ``api.md`` is a
  warning, so ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.notebooks")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _fence(text: str, lang: str = "") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _output(out: dict) -> str | None:
    """One saved output as markdown: streams and plain text as text blocks, PNG images inline; rich
    outputs (widgets, HTML figures) need a kernel and are left out."""
    if out.get("output_type") == "stream":
        return _fence(_text(out.get("text", "")))
    if out.get("output_type") == "error":
        return _fence(f"{out.get('ename')}: {out.get('evalue')}")
    data = out.get("data", {})
    if "image/png" in data:
        return f'<img alt="output" src="data:image/png;base64,{_text(data["image/png"]).strip()}">'
    if "text/plain" in data:
        return _fence(_text(data["text/plain"]))
    return None


def notebook_markdown(path: Path) -> str:
    """A saved notebook as a markdown page."""
    nb = json.loads(path.read_text())
    parts = [f"*`notebooks/{path.name}`, shown as saved: open it in JupyterLab to run it.*"]
    for cell in nb["cells"]:
        source = _text(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            parts.append(source)
        elif cell["cell_type"] == "code" and source.strip():
            parts.append(_fence(source, "python"))
            parts += [md for md in map(_output, cell.get("outputs", [])) if md]
    return "\n\n".join(parts) + "\n"


def on_files(files, config):
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File.generated(config, f"notebooks/{path.stem}.md", content=notebook_markdown(path)))
    return files


def _all_of(path: Path, variable: str = "__all__") -> list[str]:
    """The string names of a module's ``__all__`` (or ``variable``), read from its source (no import of the package)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            return [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    raise RuntimeError(f"{path} has no {variable}")


def public_names() -> list[str]:
    """``workbench.__all__``: the names of ``workbench/_api.py`` (what ``workbench`` loads on first use), and the
    ``__all__`` of every analysis package's ``api`` it star-imports."""
    init = ROOT / "workbench" / "_api.py"
    names = _all_of(init, "_ALL")
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".api") and node.level == 1:
            names += _all_of(ROOT / "workbench" / Path(*node.module.split(".")).with_suffix(".py"))
    return names


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "api.md":
        documented = set(re.findall(r"^::: workbench\.(\w+)", markdown, flags=re.M))
        for name in public_names():
            if name not in documented:
                log.warning(f"api.md does not document workbench.{name}: add '::: workbench.{name}'")
    return markdown
