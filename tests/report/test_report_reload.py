"""`workbench report` end to end on a model with a planted super weight: each analysis computed once
(the trace reuses the report's super-weight scan), and the same bytes from fresh and from reloaded results."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

from support.planted import planted_super_weight
from workbench import cli
from workbench.cache import get_cache
from workbench.report.pages import FOLDER


def _report(tmp_path, name: str) -> bytes:
    assert cli.main(["report", "--out", str(tmp_path / name)]) == 0
    return (tmp_path / name).read_bytes()


def _entries(cache) -> list[str]:
    """The analysis of every result file in ``cache``."""
    names = []
    for path in cache.root.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            names.append(json.loads(f.metadata()["workbench"])["analysis"])
    return names


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    model, _ = planted_super_weight(layer=0)  # layer 1 reads it: the trace has readers
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
        mp.setattr(cli, "load", lambda args: model)
        fresh = _report(tmp_path, "fresh.html")
        cache = get_cache()
        computed = dict(cache.stats)
        cache.clear(memory_only=True)  # as a new process: every result comes back from disk
        shutil.rmtree(tmp_path / "cache" / FOLDER)  # not the page the first report recorded (report/pages.py)
        reloaded = _report(tmp_path, "reloaded.html")
        stats = dict(cache.stats)
        replayed = _report(tmp_path, "replayed.html")  # that page, recorded again by the second report
        assert cache.stats == stats  # no result read
        return fresh, reloaded, computed, stats, _entries(cache), replayed


def test_super_weight_scan_runs_once(reports):
    _, _, computed, _, entries, _ = reports
    assert entries.count("super_weights") == 1
    assert "super_weight_trace" in entries  # the planted weight was traced
    assert computed["misses"] == len(entries)  # nothing computed twice


def test_report_bytes_are_the_same_after_a_reload(reports):
    fresh, reloaded, computed, stats, _, replayed = reports
    assert stats["misses"] == computed["misses"] and stats["disk_hits"] > 0  # really reloaded, nothing recomputed
    assert b"Super-weight trace" in fresh
    assert fresh == reloaded == replayed
