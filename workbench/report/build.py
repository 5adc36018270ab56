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

import os
from collections.abc import Sequence
from pathlib import Path

from .._tempnames import write_atomically
from ..errors import InputError
from ..render.page import render_html, slug
from ..results import Result
from .pages import CSP, check_output_path, code_identity, page_html, section_path, write_page

__all__ = ["CSP", "build_report", "check_output_path", "code_identity", "report", "section_id"]


def section_id(index: int, result: Result) -> str:
    """The id of the ``index``-th section (and the prefix of its figures' ids)."""
    return f"s{index}-{slug(result.analysis or 'result')}"


def _section_html(index: int, result: Result, key: str | None = None) -> tuple[str, str]:
    """The section id and the section: the same :func:`render_html` a notebook shows, numbered; with ``key``
    (the cache key ``result`` is filed under), rendered once and then read back."""
    sid = section_id(index, result)
    if key is None:
        return sid, render_html(result, anchor=sid)
    path = section_path(key, sid, code_identity())
    try:
        return sid, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    body = render_html(result, anchor=sid)
    try:  # atomically: a reader finds the whole section or none
        write_atomically(path, lambda tmp: tmp.write_text(body, encoding="utf-8"))
    except OSError:  # a read-only cache: the report is still written
        pass
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
    return page_html(title, [(sid, r.title, r.model_id, body) for (sid, body), r in zip(sections, results)])


def report(results: Result | Sequence[Result], path: str | os.PathLike = "report.html", *, title: str = "Workbench report",
           keys: Sequence[str | None] | None = None) -> Path:
    """Write a self-contained HTML report of ``results`` to ``path`` and return the path (atomically: a
    failed write leaves neither a partial report nor a temporary file behind). ``keys``: as for
    :func:`build_report`."""
    check_output_path(path)
    return write_page(path, build_report(results, title=title, keys=keys))
