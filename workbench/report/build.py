"""Build the HTML report: plotly.js inlined once, no network, same input -> same bytes.

Each result is one :func:`~workbench.render.render_html` section, found by its type (the notebook repr
shows the same). Given the cache key each result is filed under, a section is kept once rendered (under the cache,
``report-sections/``) and read back by that key, its place in the report, and a hash of the package's own code,
report style and plotly's version: a section is a pure function of those, and rendering is most of a report
built from cached results. Every string that came from a model or a user is escaped here or in render/; the
page's Content-Security-Policy forbids loading anything from anywhere, so even a
mistake could not make the report phone home.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
from collections.abc import Sequence
from pathlib import Path

from .._paths import cache_root
from .._tempnames import unique_suffix
from .._version import __version__
from ..errors import InputError
from ..render.page import render_html, slug
from ..results import Result

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
)
_STYLE = (Path(__file__).with_name("report.css")).read_text()
_SCRIPT = (Path(__file__).with_name("report.js")).read_text()


@functools.cache
def code_identity() -> str:
    """A hash of what a section's HTML depends on besides its result: every source file of the package (views,
    and the accessors they read), the report's style and script, and plotly's version."""
    from importlib import metadata

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{__version__}|plotly {metadata.version('plotly')}".encode())
    for path in sorted([*package.rglob("*.py"), Path(__file__).with_name("report.css"), Path(__file__).with_name("report.js")]):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _section_html(index: int, result: Result, key: str | None = None) -> tuple[str, str]:
    """The section id and the section: the same :func:`render_html` a notebook shows, numbered; with ``key``
    (the cache key ``result`` is filed under), rendered once and then read back."""
    sid = f"s{index}-{slug(result.analysis or 'result')}"
    if key is None:
        return sid, render_html(result, anchor=sid)
    name = hashlib.sha256(f"{key}|{sid}|{code_identity()}".encode()).hexdigest()[:32]
    path = cache_root() / "report-sections" / f"{name}.html"
    try:
        return sid, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    body = render_html(result, anchor=sid)
    tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")
    try:  # atomically: a reader finds the whole section or none
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only cache: the report is still written
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return sid, body


def build_report(results: Result | Sequence[Result], *, title: str = "Workbench report",
                 keys: Sequence[str | None] | None = None) -> str:
    """The report as an HTML string (see :func:`report` to write it to a file). ``keys``: the cache key each
    result is filed under (None for one that is not), to keep and reuse its rendered section."""
    if isinstance(results, Result):
        results = [results]
    if not results:
        raise InputError("build_report needs at least one result")
    if keys is not None and len(keys) != len(results):
        raise InputError(f"{len(keys)} keys for {len(results)} results")
    sections = [_section_html(i, r, keys[i] if keys is not None else None) for i, r in enumerate(results)]
    toc = "".join(f'<li><a href="#{sid}">{html.escape(r.title)}</a> — {html.escape(r.model_id)}</li>'
                  for (sid, _), r in zip(sections, results))
    from plotly.offline import get_plotlyjs

    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>workbench {html.escape(__version__)} · {len(results)} section(s)</p>"
        f"<nav><ol>{toc}</ol></nav></header>",
        *(body for _, body in sections),
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ])


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a file the report can be written to, or :class:`InputError` saying why not (checked before
    any work: a folder in its place, a parent that is not a folder or cannot be written)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; name a file, e.g. {path / 'report.html'}")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"cannot write {path}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {existing} is not writable; choose another --out")
    return path


def report(results: Result | Sequence[Result], path: str | os.PathLike = "report.html", *, title: str = "Workbench report",
           keys: Sequence[str | None] | None = None) -> Path:
    """Write a self-contained HTML report of ``results`` to ``path`` and return the path (atomically: a
    failed write leaves neither a partial report nor a temporary file behind). ``keys``: as for
    :func:`build_report`."""
    path = check_output_path(path)
    text = build_report(results, title=title, keys=keys)
    tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")  # two writers never share a temp file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path.resolve()
