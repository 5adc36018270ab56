"""Result cache: keys, hits and misses, damaged entries, concurrent writers, location."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import warnings
from pathlib import Path

import pytest

import workbench as wb
from workbench.analyses.overview.card import OverviewConfig
from workbench.cache import ResultCache, cache_key


def _overview(model, cache, **options):
    return wb.model_overview(model, cache=cache, **options)


def test_key_depends_on_analysis_config_fingerprint_and_version(monkeypatch):
    base = cache_key("overview", OverviewConfig(), "abc")
    assert base == cache_key("overview", OverviewConfig(), "abc")
    assert base != cache_key("overview", OverviewConfig(sample_text="x"), "abc")
    assert base != cache_key("overview", OverviewConfig(), "abd")
    monkeypatch.setattr("workbench.cache.store.__version__", "9.9.9")
    assert base != cache_key("overview", OverviewConfig(), "abc")


def test_miss_then_memory_hit_then_disk_hit(tiny_llama, tmp_path):
    cache = ResultCache(tmp_path)
    first = _overview(tiny_llama, cache)
    assert cache.stats["misses"] == 1 and len(list(cache.root.glob("*.safetensors"))) == 1
    assert _overview(tiny_llama, cache) is first
    assert cache.stats["memory_hits"] == 1

    fresh = ResultCache(tmp_path)  # a new process would start like this
    again = _overview(tiny_llama, fresh)
    assert fresh.stats == {"memory_hits": 0, "disk_hits": 1, "misses": 0, "corrupt": 0}
    assert again.to_frame().equals(first.to_frame())


def test_weight_edit_is_a_miss(tmp_path):
    import torch

    model = wb.load_model("tiny-llama")
    cache = ResultCache(tmp_path)
    a = _overview(model, cache)
    with torch.no_grad():
        model.mlp_weights(0).W_out[0, 0] += 3.0
    b = _overview(model, cache)
    assert cache.stats["misses"] == 2 and a.fingerprint != b.fingerprint


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_entry_is_detected_and_recomputed(tiny_llama, tmp_path, damage):
    _overview(tiny_llama, ResultCache(tmp_path))
    (path,) = ResultCache(tmp_path).root.glob("*.safetensors")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # one byte of tensor data: only the checksum can notice
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    else:
        path.write_bytes(b"")
    cache = ResultCache(tmp_path)
    with pytest.warns(UserWarning, match="damaged"):
        result = _overview(tiny_llama, cache)
    assert cache.stats["corrupt"] == 1 and cache.stats["misses"] == 1
    assert result.to_frame("parameters")["parameters"].sum() == tiny_llama.facts.n_params
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResultCache(tmp_path).get(path.stem) is not None  # the rewritten entry is sound


def _worker(root: str, marker_dir: str, barrier, queue) -> None:
    """Child process: wait for its sibling, then ask the shared cache for one key."""
    os.environ["WORKBENCH_PROGRESS"] = "0"
    import time

    import workbench as wb
    from workbench.cache import ResultCache

    model = wb.load_model("tiny-llama", cache_dir=root)
    cache = ResultCache(root)

    def compute():
        Path(marker_dir, f"computed-{os.getpid()}").touch()
        time.sleep(1.0)  # a slow analysis: the other process arrives while this one works
        return wb.analyses.overview.card.compute_overview(model, OverviewConfig())

    barrier.wait()
    result = cache.get_or_compute("shared-key", compute)
    queue.put(float(result.to_frame()["frobenius"].sum()))


def test_two_processes_compute_once_and_agree(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    markers = tmp_path / "markers"
    markers.mkdir()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(markers), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    values = [queue.get(timeout=5) for _ in procs]
    assert values[0] == values[1]
    assert len(list(markers.iterdir())) == 1  # the second process waited and read the first one's result
    assert ResultCache(tmp_path).get("shared-key") is not None


def _writer(root: str, n: int) -> None:
    import workbench as wb
    from workbench.cache import ResultCache

    model = wb.load_model("tiny-llama", cache_dir=root, progress=False)
    result = wb.analyses.overview.card.compute_overview(model, OverviewConfig())
    cache = ResultCache(root, memory_items=0)
    for _ in range(n):
        cache.put("raced", result)


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 25)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = ResultCache(tmp_path)
    assert cache.get("raced") is not None and cache.stats["corrupt"] == 0
    assert not list(cache.root.glob(".*.tmp"))


def test_location_from_argument_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "env"))
    assert ResultCache().root == tmp_path / "env" / "results"
    assert ResultCache(tmp_path / "arg").root == tmp_path / "arg" / "results"


def test_clear_cache(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    wb.model_overview(tiny_llama)
    assert list((tmp_path / "results").glob("*.safetensors"))
    for folder in ("report-plans", "report-sections"):  # what reports keep about the results
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x").write_text("")
    wb.clear_cache()
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "report-plans").exists() and not (tmp_path / "report-sections").exists()
    assert wb.get_cache().stats["misses"] == 1
    wb.model_overview(tiny_llama)
    assert wb.get_cache().stats["misses"] == 2  # the memory layer was cleared too


def test_cache_false_recomputes_and_stores_nothing(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # the default cache: cache=True would use it
    a = _overview(tiny_llama, False)
    assert not (tmp_path / "results").exists()
    cached = _overview(tiny_llama, True)
    b = _overview(tiny_llama, False)
    assert b is not cached and b is not a and b.to_frame().equals(cached.to_frame())
    assert wb.get_cache().stats == {"memory_hits": 0, "disk_hits": 0, "misses": 1, "corrupt": 0}  # never asked


def test_entry_with_a_stale_layout_is_recomputed(tiny_llama, tmp_path):
    """A sound file whose JSON no longer matches what this version reads (e.g. written by an older one)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from workbench.results import _digest

    _overview(tiny_llama, ResultCache(tmp_path))
    (path,) = ResultCache(tmp_path).root.glob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()["workbench"])
    doc["tables"] = {t["name"]: t for t in doc["tables"]}  # an old layout: a dict of tables
    header, tensors = json.dumps(doc), load_file(str(path))
    save_file(tensors, str(path), metadata={"workbench": header, "sha256": _digest(tensors, header)})
    cache = ResultCache(tmp_path)
    with pytest.warns(UserWarning, match="not a readable workbench result"):
        _overview(tiny_llama, cache)
    assert cache.stats["corrupt"] == 1


def test_a_valid_result_of_another_analysis_under_a_key_is_not_returned(tiny_llama, tmp_path):
    cache = wb.ResultCache(tmp_path)
    composition = wb.head_composition(tiny_llama, cache=cache, null_samples=8)
    (composition_path,) = cache.root.glob("*.safetensors")
    wb.model_overview(tiny_llama, cache=cache)
    (overview_path,) = [p for p in cache.root.glob("*.safetensors") if p != composition_path]
    shutil.copy(composition_path, overview_path)  # the composition file under the overview's key
    cache.clear(memory_only=True)
    with pytest.warns(UserWarning, match="holds a head_composition result written for another cache entry"):
        again = wb.model_overview(tiny_llama, cache=cache)
    assert type(again).__name__ == "OverviewResult" and type(composition).__name__ == "HeadCompositionResult"


def test_a_directory_where_an_entry_should_be_is_replaced(tiny_llama, tmp_path):
    cache = wb.ResultCache(tmp_path)
    first = wb.model_overview(tiny_llama, cache=cache)
    (path,) = cache.root.glob("*.safetensors")
    path.unlink()
    path.mkdir()
    cache.clear(memory_only=True)
    with pytest.warns(UserWarning, match="not a file"):
        again = wb.model_overview(tiny_llama, cache=cache)
    assert path.is_file() and again.fingerprint == first.fingerprint


def test_an_edit_through_data_is_seen_by_the_next_cached_call(tmp_path, monkeypatch):
    from workbench.models import hooked

    cache = wb.ResultCache(tmp_path)
    for exact in (True, False):  # small models rescan every weight; big ones compare a content sample
        monkeypatch.setattr(hooked, "EXACT_CHECK_PARAMS", 10**12 if exact else 0)
        model = wb.load_model("tiny-llama")
        before = wb.model_overview(model, cache=cache)
        model.hf_model.model.layers[0].mlp.down_proj.weight.data.mul_(2.0)  # what notebook code often does
        after = wb.model_overview(model, cache=cache)
        assert after.fingerprint != before.fingerprint
        assert after.to_frame()["frobenius"].sum() > before.to_frame()["frobenius"].sum()


def test_entries_are_found_again_whatever_their_result_records(tmp_path):
    """A trained demo model's result records the trained model's fingerprint, not its source's: the entry is still
    its key's (the check reads the key recorded in the file, it does not re-derive it)."""
    cache = wb.ResultCache(tmp_path)
    first = wb.train_digits(cache=cache, epochs=2)
    cache.clear(memory_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = wb.train_digits(cache=cache, epochs=2)
    assert cache.stats["disk_hits"] == 1 and again.fingerprint == first.fingerprint
