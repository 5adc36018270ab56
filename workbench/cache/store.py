"""Content-addressed result cache: an in-memory LRU in front of a folder of result files.

Key = SHA-256 of (analysis and its revision, config, model fingerprint, workbench version), so a
result is reused exactly when it would be recomputed identically. Entries are
written to a temp file and renamed into place (readers never see half a file); a
per-key file lock makes a second process wait for the first one's result instead
of computing it again. A damaged entry is reported with a warning, deleted and
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from collections.abc import Callable

from filelock import FileLock

from .._paths import cache_root
from .._version import __version__
from ..errors import CacheCorruptError
from ..results import Result, config_to_json, recorded_cache_key

log = logging.getLogger(__name__)  # under "workbench": hits and misses, for who wants to see them


def cache_key(analysis: str, config, fingerprint: str, version: int = 1) -> str:
    """``version``: the analysis' own revision; bump it when its results change for the same inputs."""
    doc: dict[str, object] = {"analysis": analysis, "config": config_to_json(config), "fingerprint": fingerprint, "workbench": __version__}
    if version != 1:  # version 1 keeps the keys of entries written before analyses had versions
        doc["version"] = version
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


class ResultCache:
    """Results on disk under ``root/results`` with an in-memory layer of ``memory_items``."""

    def __init__(self, root: str | os.PathLike | None = None, *, memory_items: int = 32):
        self.root = cache_root(root) / "results"
        self.memory_items = memory_items
        self._memory: OrderedDict[str, Result] = OrderedDict()
        self.stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0, "corrupt": 0}

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str, analysis: str | None = None) -> Result | None:
        """The cached result for ``key``, or ``None``. A damaged file or a directory counts as none; so does a
        valid result written for another key (a file copied or moved into place), or, when ``analysis`` is
        given, a result of another analysis."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats["memory_hits"] += 1
            log.debug("cache hit (memory): %s %s", analysis or "result", key)
            return self._memory[key]
        path = self.path(key)
        if not path.exists():
            return None
        try:
            if not path.is_file():
                raise CacheCorruptError(f"{path} is not a file")
            result = Result.load(path)
            recorded = recorded_cache_key(path)
            if (recorded is not None and recorded != key) or (analysis is not None and result.analysis != analysis):
                raise CacheCorruptError(f"{path} holds a {result.analysis} result written for another cache entry")
        except FileNotFoundError:  # removed by clear() from another process meanwhile
            return None
        except CacheCorruptError as exc:
            self.stats["corrupt"] += 1
            warnings.warn(f"cache entry damaged, recomputing: {exc}", stacklevel=3)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            return None
        self.stats["disk_hits"] += 1
        log.info("cache hit (disk): %s %s from %s", analysis or result.analysis, key, path)
        self._remember(key, result)
        return result

    def put(self, key: str, result: Result) -> None:
        result.save(self.path(key), cache_key=key)
        self._remember(key, result)

    def get_or_compute(self, key: str, compute: Callable[[], Result], analysis: str | None = None) -> Result:
        """Return the cached result for ``key``, computing and storing it once if missing (``analysis``: the
        analysis the key names, checked against an entry found)."""
        found = self.get(key, analysis)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path(key)) + ".lock"):
            found = self.get(key, analysis)  # another process may have finished it while we waited
            if found is not None:
                return found
            self.stats["misses"] += 1
            log.info("cache miss: %s %s, computing", analysis or "result", key)
            start = time.perf_counter()
            result = compute()
            self.put(key, result)
            log.info("computed %s %s in %.2f s, stored in %s", analysis or result.analysis, key,
                     time.perf_counter() - start, self.path(key))
            return result

    def _remember(self, key: str, result: Result) -> None:
        if self.memory_items <= 0:
            return
        self._memory[key] = result
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def clear(self, *, memory_only: bool = False) -> None:
        """Forget every cached result (in memory, and on disk unless ``memory_only``)."""
        self._memory.clear()
        if not memory_only:
            shutil.rmtree(self.root, ignore_errors=True)


_default: dict[Path, ResultCache] = {}


def get_cache(root: str | os.PathLike | None = None) -> ResultCache:
    """The shared cache for ``root`` (default: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``)."""
    folder = cache_root(root)
    if folder not in _default:
        _default[folder] = ResultCache(folder)
    return _default[folder]


def clear_cache(root: str | os.PathLike | None = None, *, models: bool = False) -> None:
    """Delete cached results (and the reports' plans, rendered sections and pages that name them); with ``models=True``
    also the converted (dequantized) models."""
    get_cache(root).clear()
    for folder in ("report-plans", "report-sections", "report-pages"):
        shutil.rmtree(cache_root(root) / folder, ignore_errors=True)
    if models:
        shutil.rmtree(cache_root(root) / "models", ignore_errors=True)
