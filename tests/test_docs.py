"""The documentation site builds offline with warnings as errors (``mkdocs build --strict``): every page,
link and anchor resolves, the API reference documents every name of ``workbench.__all__`` (the build's
hook warns otherwise), and every notebook is a page."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import workbench

ROOT = Path(__file__).resolve().parent.parent
NEEDS = ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = [m for m in NEEDS if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install -e '.[docs]' (./setup.sh --test does)")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_api_reference_documents_every_public_name(site):
    page = (site / "api" / "index.html").read_text()
    ids = set(re.findall(r'id="workbench\.(\w+)"', page))
    assert set(workbench.__all__) <= ids, sorted(set(workbench.__all__) - ids)
    # generated from the docstrings, not only headings
    assert "Load a language model" in page


def test_every_notebook_and_analysis_has_a_page(site):
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / nb.stem / "index.html").exists(), nb.name
    pages = {p.parent.name for p in (site / "analyses").glob("*/index.html")}
    assert {"overview", "super-weights", "heads", "bilinear", "attribution"} <= pages
    assert (site / "questions" / "index.html").exists() and (site / "references" / "index.html").exists()


def test_nothing_points_to_a_references_file_the_repository_lacks():
    hits = [str(p.relative_to(ROOT)) for base in ("workbench", "tests", "data", "docs", "notebooks")
            for p in (ROOT / base).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".csv", ".ipynb")
            and "REFERENCES.md" in p.read_text() and p != Path(__file__)]
    assert not hits
