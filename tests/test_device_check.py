"""``benchmarks/device_check.py`` (the script a session lent a GPU runs): its comparisons can fail, its report is
written after every step and survives a run cut at the deadline, and its steps run end to end on the CPU."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbench.analyses.overview.card import OverviewConfig, OverviewResult

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def dc():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(tensors: dict, tables: dict) -> OverviewResult:
    return OverviewResult(config=OverviewConfig(), model_id="m", fingerprint="f", tensors=tensors, tables=tables)


@pytest.fixture
def pair():
    gen = torch.Generator().manual_seed(0)
    vectors = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0]  # rows: unit vectors, signs arbitrary
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "kind": ["Q", "K", "Q", "K"], "score": [0.4, 0.3, 0.2, 0.1]})
    return _result({"top_vectors": vectors, "scores": torch.rand(3, 4, generator=gen)}, {"pairs": table})


def _with(result, *, tensors=None, table=None):
    return dataclasses.replace(result, tensors={**result.tensors, **(tensors or {})},
                               tables={"pairs": result.tables["pairs"] if table is None else table})


def test_equal_results_agree(dc, pair):
    assert dc.compare(pair, _with(pair))["ok"]


def test_eigenvector_signs_are_fixed_but_nothing_else_is(dc, pair):
    flips = torch.tensor([1.0, -1, 1, -1, -1, 1])[:, None]
    assert dc.compare(pair, _with(pair, tensors={"top_vectors": pair.tensors["top_vectors"] * flips}))["ok"]
    flipped_scores = _with(pair, tensors={"scores": -pair.tensors["scores"]})  # a sign error where signs mean something
    assert not dc.compare(pair, flipped_scores)["ok"]
    rotated = pair.tensors["top_vectors"].roll(1, dims=-1)  # not a sign flip: other vectors
    assert not dc.compare(pair, _with(pair, tensors={"top_vectors": rotated}))["ok"]


def test_a_small_tensor_difference_past_tolerance_fails(dc, pair):
    scores = pair.tensors["scores"].clone()
    scores[1, 2] += 2e-3 * scores.abs().max()
    row = dc.compare(pair, _with(pair, tensors={"scores": scores}))
    assert not row["ok"] and "tensor scores" in row["worst"]


def test_tables_are_compared_float_and_labels_with_rows_aligned(dc, pair):
    table = pair.tables["pairs"]
    assert dc.compare(pair, _with(pair, table=table.iloc[[1, 0, 3, 2]].reset_index(drop=True)))["ok"]  # order only
    changed = table.copy()
    changed.loc[2, "score"] = 0.25  # a table-only result (head effects has no tensors) must still be compared
    assert not dc.compare(pair, _with(pair, table=changed))["ok"]
    relabelled = table.copy()
    relabelled.loc[3, "kind"] = "V"
    row = dc.compare(pair, _with(pair, table=relabelled))
    assert not row["ok"] and row["tables_labels"] >= 0.25
    assert not dc.compare(pair, None)["ok"]  # a failed run never agrees


def test_steps_run_on_the_cpu_and_report_after_each(tmp_path):
    out = tmp_path / "device.json"
    steps = ["imports", "analyses on the device", "agreement with the CPU", "fingerprints"]
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out),
                           "--wheelhouse", str(tmp_path / "none"), "--only", *steps],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [s["step"] for s in report["steps"]] == steps and report["status"] == "done; nothing failed"
    assert report["steps"][0]["versions"]["transformer-lens"]
    agreement = report["steps"][2]["analyses"]
    assert set(agreement) == {"overview", "head composition", "head effects", "super weights", "super-weight trace",
                              "bilinear replacement", "ReAGent"}
    assert all(r["ok"] and r["tensors"] == 0.0 and r["tables_float"] == 0.0 for r in agreement.values())  # CPU vs CPU


def test_a_run_cut_at_the_deadline_still_leaves_its_report(tmp_path):
    out = tmp_path / "device.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out),
                           "--wheelhouse", str(tmp_path / "none"), "--deadline", "4"],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())  # the watchdog wrote it, or the run skipped what did not fit
    assert done.returncode in (0, 3), done.stderr[-2000:]
    if done.returncode == 3:
        assert report["status"].startswith("stopped by the watchdog") and "DEADLINE" in done.stdout
    else:  # a fast machine finishes the imports in time and skips every step that needs more than is left
        assert any(s.get("skipped") for s in report["steps"])
