"""A report rebuilt from the cache without loading the model.

A result's cache key is made from the model's fingerprint (a hash of its loaded weights) and the prepared config,
which some ``prepare`` hooks derive from the model; so naming the results takes the model. A report written from a
model source made of files (the embedded model, a ``.gguf`` file, an HF folder) therefore records its plan: the
cache key of each section, under the source's identity. The identity is a hash of the content of every file the
model is loaded from (XXH3-128 per file, as the GGUF conversion keys its folder), the loading options that change
weights (``dtype``), the analyses and their versions, the workbench's and its numerical dependencies' versions,
and the shipped data files (the evaluation text). A later report with the same identity reads its sections by
those keys and never loads the model. A changed byte in any of those files changes the identity: the plan is not
found, the model is loaded and fingerprinted, and each analysis runs (or is read from the cache, when the weights'
fingerprint did not change). A plan never names a result by itself: a missing or damaged entry means a full run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._paths import cache_root
from .._tempnames import write_atomically
from .._version import __version__
from ..cache import ResultCache
from ..engine.registry import get_analysis
from ..models import gguf
from ..models.sources import resolve_source
from ..results import Result
from .pages import PACKAGES, data_identity, package_versions

__all__ = ["PACKAGES", "Plan", "cached_sections", "model_files", "plan_id", "save_plan"]


@dataclass(frozen=True)
class Plan:
    """What a report showed: the model's name, each section's (analysis, cache key), each skipped analysis' reason."""

    model: str
    sections: list[tuple[str, str]]
    skipped: list[tuple[str, str]]


def _files(kind: str, ref: str) -> list[tuple[str, Path]]:
    if kind == "embedded":
        return [("model.gguf", gguf.embedded_gguf_path())]
    if kind == "gguf":
        return [("model.gguf", Path(ref))]
    folder = Path(ref)
    return [(str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*")) if p.is_file()]


def plan_id(model: str | os.PathLike | None, analyses: list[str], *, dtype: str | None = None,
            device_map: str | None = None) -> str | None:
    """The identity a report's plan is filed under, or None when the source is not files (a hub id, a tiny random
    model) or is placed by ``device_map`` (then the report always loads the model)."""
    source = resolve_source(model)
    if device_map is not None or source.kind not in ("embedded", "gguf", "folder"):
        return None
    root = cache_root()
    doc = {
        "source": source.kind,
        "files": [(name, path.stat().st_size, gguf.content_key(path, root)) for name, path in _files(source.kind, source.ref)],
        "dtype": dtype,
        "analyses": [(name, get_analysis(name).version) for name in analyses],
        "workbench": __version__,
        "packages": package_versions(),
        "data": data_identity(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def model_files(model: str | os.PathLike | None) -> tuple[list[Path], Path | None]:
    """The files a plan's identity hashes for ``model`` (a source made of files), and the folder when it is one."""
    source = resolve_source(model)
    return [path for _, path in _files(source.kind, source.ref)], Path(source.ref) if source.kind == "folder" else None


def _path(identity: str) -> Path:
    return cache_root() / "report-plans" / f"{identity}.json"


def save_plan(identity: str, plan: Plan) -> None:
    """Record ``plan`` under ``identity`` (atomically: a reader sees the old plan or the new one)."""
    text = json.dumps({"model": plan.model, "sections": plan.sections, "skipped": plan.skipped})
    write_atomically(_path(identity), lambda tmp: tmp.write_text(text))


def cached_sections(identity: str, store: ResultCache) -> tuple[Plan, list[Result]] | None:
    """The plan filed under ``identity`` and its sections read from ``store``; None unless every one is there."""
    try:
        doc = json.loads(_path(identity).read_text())
        plan = Plan(str(doc["model"]), [(str(a), str(k)) for a, k in doc["sections"]],
                    [(str(a), str(why)) for a, why in doc["skipped"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    results = []
    for analysis, key in plan.sections:
        found = store.get(key, analysis)
        if found is None:
            return None
        results.append(found)
    return plan, results
