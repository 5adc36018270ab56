"""A report page written again from what an identical run left: its rendered sections, without torch, the
analyses or the model.

``workbench report`` with every section cached (``report/plan.py``) still reads each Result (for the table of
contents) and the analyses' registry (for the plan's identity), which imports torch, pandas and the analyses: ~3 s
of a ~3.5 s run. After a run that had or wrote a plan, :func:`record` files what its page was made of (each
section's id, title, model id, rendered section file and result file) under a hash of the command's options and of
what the page depends on that the cache does not see (the package's code, the numerical packages' versions, the
shipped data, plotly). :func:`replay` reads it back, checks that the plan is still there and names the same
sections, that the model's files and every result file are the ones that were read (path, size, modification
time: the trust the GGUF content keys already give them; a changed weight rewrites its file) and that every
rendered section is still there, and writes the same page. Anything missing or changed: None, and the command
takes its usual path (which records the page again).

This module imports only the standard library and the package's leaf modules: a replayed report imports neither
torch nor transformers (``tests/report/test_report_plan.py`` checks it in a fresh process).
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .._paths import DATA_DIR, cache_root
from .._tempnames import write_atomically
from .._version import __version__
from ..errors import InputError

# the packages whose versions change numbers a result holds
PACKAGES = ("torch", "transformers", "transformer-lens", "numpy", "scikit-learn")

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
)
_HERE = Path(__file__).resolve().parent
_STYLE = (_HERE / "report.css").read_text()
_SCRIPT = (_HERE / "report.js").read_text()
FOLDER = "report-pages"


@functools.cache
def code_identity() -> str:
    """A hash of what a section's HTML depends on besides its result: every source file of the package (views,
    and the accessors they read), the report's style and script, and plotly's version."""
    package = _HERE.parent
    digest = hashlib.sha256(f"{__version__}|plotly {metadata.version('plotly')}".encode())
    for path in sorted([*package.rglob("*.py"), _HERE / "report.css", _HERE / "report.js"]):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in PACKAGES}


def data_identity() -> list[tuple[str, str]]:
    """(name, SHA-256) of every shipped data file (the evaluation text, published indices)."""
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(DATA_DIR.iterdir()) if p.is_file()]


def section_path(key: str, sid: str, code: str | None = None) -> Path:
    """Where the section ``sid`` rendered from the result filed under ``key`` by the code ``code`` (default: this
    code, :func:`code_identity`) is kept (``report/build.py``)."""
    name = hashlib.sha256(f"{key}|{sid}|{code or code_identity()}".encode()).hexdigest()[:32]
    return cache_root() / "report-sections" / f"{name}.html"


def page_html(title: str, sections: Sequence[tuple[str, str, str, str]]) -> str:
    """The report page: plotly.js inlined once, a table of contents, and each (section id, title, model id, HTML)."""
    from plotly.offline import get_plotlyjs

    toc = "".join(f'<li><a href="#{sid}">{html.escape(name)}</a> — {html.escape(model_id)}</li>'
                  for sid, name, model_id, _ in sections)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>workbench {html.escape(__version__)} · {len(sections)} section(s)</p>"
        f"<nav><ol>{toc}</ol></nav></header>",
        *(body for *_, body in sections),
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


def write_page(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a failed write leaves neither a partial report nor a temporary file
    behind) and return the resolved path."""
    path = check_output_path(path)
    try:
        write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    return path.resolve()


def page_key(options: dict[str, Any]) -> str:
    """The name a page is recorded under: the command's options (``model`` as given, and the path it names when it
    names one, since a relative path depends on the folder it is given in), the code, the packages, the data."""
    model = options.get("model")
    named = Path(str(model)).expanduser() if model is not None else None
    doc = {
        "options": options,
        "model_path": str(named.resolve()) if named is not None and named.exists() else None,
        "code": code_identity(),
        "packages": package_versions(),
        "data": data_identity(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def _stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def record(options: dict[str, Any], *, plan: str, title: str, model_files: Sequence[Path], folder: Path | None,
           sections: Sequence[tuple[str, str, str, str, str]], skipped: Sequence[tuple[str, str]]) -> None:
    """File what a page written from the plan ``plan`` was made of: ``sections`` as (section id, title, model id,
    analysis, cache key), read from the cache as they are now. Best effort: a read-only cache records nothing."""
    from ..cache.store import get_cache

    store = get_cache()
    try:
        doc = {
            "plan": plan, "title": title, "skipped": [list(s) for s in skipped],
            "files": [_stamp(Path(p).resolve()) for p in model_files],
            "folder": str(folder.resolve()) if folder is not None else None,
            "sections": [[sid, name, model_id, analysis, key, _stamp(store.path(key)), str(section_path(key, sid))]
                         for sid, name, model_id, analysis, key in sections],
        }
        text = json.dumps(doc)
        write_atomically(cache_root() / FOLDER / f"{page_key(options)}.json", lambda tmp: tmp.write_text(text))
    except OSError:
        pass


def _folder_files(folder: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in folder.rglob("*") if p.is_file())


def replay(options: dict[str, Any], out: str | os.PathLike) -> tuple[Path, int, list[tuple[str, str]]] | None:
    """Write the page recorded for ``options`` to ``out`` when everything it was made of is unchanged: the path
    written, its number of sections and the analyses it skipped (with why); else None (nothing written)."""
    try:
        doc = json.loads((cache_root() / FOLDER / f"{page_key(options)}.json").read_text())
        plan = json.loads((cache_root() / "report-plans" / f"{doc['plan']}.json").read_text())
        if [[a, k] for *_, a, k, _, _ in doc["sections"]] != [list(s) for s in plan["sections"]]:
            return None
        if doc["folder"] is not None and _folder_files(Path(doc["folder"])) != sorted(f[0] for f in doc["files"]):
            return None
        if any(_stamp(Path(stamp[0])) != stamp for stamp in doc["files"]):
            return None
        sections = []
        for sid, name, model_id, _analysis, _key, stamp, body in doc["sections"]:
            if _stamp(Path(stamp[0])) != stamp:
                return None
            sections.append((sid, name, model_id, Path(body).read_text(encoding="utf-8")))
        title, skipped = str(doc["title"]), [(str(a), str(why)) for a, why in doc["skipped"]]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return write_page(out, page_html(title, sections)), len(sections), skipped
