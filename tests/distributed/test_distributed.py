"""wb.distributed on a local Dask cluster (two single-threaded workers, started once for the module): each
workload gives the single-process run's results exactly, a rerun reads them back from the cache, and a worker
killed mid-run costs only its task, which runs again on another worker."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

if not os.environ.get("CI"):  # CI installs the cluster extra (setup.sh --test): there a missing Dask fails
    pytest.importorskip("distributed", reason="wb.distributed needs the cluster extra: pip install 'lm-workbench[cluster]'")

import workbench as wb
from support.training_run import KillOnce, save_training_run
from workbench.distributed import LayerRange, split_layers
from workbench.errors import InputError

PROMPTS = ["The cat sat on the mat.", "Paris is the capital of", "One, two, three, four,", "A B C D E F",
           "Hello world, hello", "def f(x): return", "The quick brown fox", "1 2 3 4 5 6"]
OPTIONS = dict(method="integrated_gradients", ig_steps=4, max_new_tokens=2)


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory):
    return save_training_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def cluster():
    with wb.distributed.cluster(n_workers=2) as c:
        yield c


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The single-process references compute as a worker does, on one thread: float32 sums split over two threads
    differ in their last bits (up to 1e-5 relative for integrated gradients), and the comparisons are exact."""
    monkeypatch.setenv("WORKBENCH_THREADS", "1")


@pytest.fixture
def cache_root(tmp_path):
    return tmp_path / "cache"


def assert_same(a: wb.Result, b: wb.Result) -> None:
    """Equal to the bit: type, config, identity, every tensor, table and meta entry."""
    assert type(a) is type(b) and a.config == b.config
    assert (a.model_id, a.fingerprint, a.meta) == (b.model_id, b.fingerprint, b.meta)
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:  # NaN where a score is undefined (attribution to masked positions) equals NaN
        torch.testing.assert_close(a.tensors[key], b.tensors[key], rtol=0, atol=0, equal_nan=True)
    assert a.tables.keys() == b.tables.keys()
    for key in a.tables:
        pd.testing.assert_frame_equal(a.tables[key], b.tables[key], check_exact=True)


def test_the_cluster_has_single_threaded_workers(cluster):
    assert cluster.n_workers == 2
    threads = cluster.client.run(torch.get_num_threads)
    assert set(threads.values()) == {1}
    assert len(set(cluster.worker_pids().values())) == 2


# ------------------------------------------------------------------ attribution of a dataset of prompts
def test_dataset_equals_single_process_and_resumes_from_the_cache(cluster, cache_root, tiny_llama):
    run = wb.distributed.attribute_dataset("tiny-llama", PROMPTS, cache_root=cache_root, **OPTIONS)
    assert run.computed == [True] * len(PROMPTS)
    assert len(set(run.workers)) == 2  # both workers took prompts
    model = tiny_llama
    for prompt, result in zip(PROMPTS, run.results):
        assert_same(result, wb.attribute(model, prompt=prompt, cache=False, **OPTIONS))
    # the same keys as a single-process call: this process finds the workers' results in the shared cache
    store = wb.ResultCache(cache_root)
    assert_same(wb.attribute(model, prompt=PROMPTS[0], cache=store, **OPTIONS), run.results[0])
    assert store.stats["misses"] == 0
    again = wb.distributed.attribute_dataset("tiny-llama", [*PROMPTS, "A new prompt"], cache_root=cache_root, **OPTIONS)
    assert again.computed == [False] * len(PROMPTS) + [True]  # only the new prompt is computed
    for a, b in zip(again.results, run.results):
        assert_same(a, b)


def test_a_worker_killed_mid_run_costs_only_its_task(cluster, cache_root, tmp_path, tiny_llama):
    marker = tmp_path / "killed"
    cluster.client.register_plugin(KillOnce(str(marker), "attribute_task"), name="kill-once")
    try:
        run = wb.distributed.attribute_dataset("tiny-llama", PROMPTS, cache_root=cache_root, **OPTIONS)
    finally:
        cluster.client.unregister_worker_plugin("kill-once")
    killed = int(marker.read_text())  # a worker did die, in the middle of the job
    assert killed not in run.workers  # its task was run again by another worker (or its nanny's new process)
    model = tiny_llama
    for prompt, result in zip(PROMPTS, run.results):
        assert_same(result, wb.attribute(model, prompt=prompt, cache=False, **OPTIONS))
    assert killed not in cluster.worker_pids().values()


def test_dataset_refuses_one_string_and_empty_items():
    with pytest.raises(InputError, match="list of prompts"):
        wb.distributed.attribute_dataset("tiny-llama", "one prompt", cluster="unused")
    with pytest.raises(InputError, match="needs a prompt"):
        wb.distributed.attribute_dataset("tiny-llama", [{"target": " x"}], cluster="unused")


# ------------------------------------------------------------------ one analysis over many checkpoints
def test_checkpoint_series_equals_single_process(cluster, run_folders, cache_root):
    options = dict(null_samples=8)
    results = wb.distributed.run_checkpoints(run_folders, "head_composition", cache_root=cache_root, **options)
    singles = [wb.head_composition(wb.load_weights(f), cache=False, **options) for f in run_folders]
    for a, b in zip(results, singles):
        assert_same(a, b)
    assert len({r.fingerprint for r in results}) == len(run_folders)  # three different checkpoints

    series = wb.distributed.over_checkpoints(run_folders, "head_composition", cache_root=cache_root, **options)
    reference = wb.distributed.checkpoint_series(singles, [f.name for f in run_folders], analysis="head_composition",
                                                 options=options)
    assert_same(series, reference)
    assert series.steps == [0, 500, 1000]
    assert {"Q top score", "V pairs above null q99"} <= set(series.metrics)
    scores = series.summary_table["K top score"]
    assert scores.nunique() == 3  # the drift moves the composition scores
    fig = series.figure()
    assert all(list(t.x) == [0, 500, 1000] for t in fig.data) and len(fig.data) == len(series.metrics)
    path = series.save(cache_root / "series.safetensors")
    assert_same(wb.Result.load(path), series)


def test_checkpoints_refuse_a_missing_folder(run_folders, tmp_path):
    with pytest.raises(InputError, match="no such checkpoint"):
        wb.distributed.run_checkpoints([run_folders[0], tmp_path / "nothing"], "overview", cluster="unused")


# ------------------------------------------------------------------ weight-only analyses, layer-parallel
def test_layer_parallel_overview_equals_single_process(cluster, run_folders, cache_root):
    folder = run_folders[-1]
    single = wb.model_overview(wb.load_weights(folder), cache=False)
    store = wb.ResultCache(cache_root)
    merged = wb.distributed.layer_parallel(folder, "overview", parts=3, cache=store)  # ranges of 1, 2 and 1 layers
    assert_same(merged, single)
    assert store.stats["misses"] == 1
    # cached under the single-process key: wb.model_overview finds it
    assert_same(wb.model_overview(wb.load_weights(folder), cache=store), single)
    assert store.stats["misses"] == 1


def test_a_merge_of_the_wrong_ranges_is_caught(cluster, run_folders):
    """Negative control: parts merged with the layer ranges swapped are no longer equal."""
    from workbench.distributed.layers import merge_overview

    folder = run_folders[-1]
    weights = wb.load_weights(folder)
    single = wb.model_overview(weights, cache=False)
    ranges = split_layers(4, 2)
    parts = [wb.model_overview(LayerRange(weights, r, weights.fingerprint()), cache=False) for r in ranges]
    assert_same(merge_overview(weights, parts, ranges), single)
    with pytest.raises(AssertionError):
        assert_same(merge_overview(weights, parts, ranges[::-1]), single)


def test_layer_range_reads_the_whole_models_layers(run_folders):
    weights = wb.load_weights(run_folders[0])
    view = LayerRange(weights, (2, 3), weights.fingerprint())
    assert view.facts.n_layers == 2 and len(view.facts.layers) == 2
    assert torch.equal(view.attention_weights(0).W_Q, weights.attention_weights(2).W_Q)
    assert torch.equal(view.effective_mlp_weights(1).W_in, weights.effective_mlp_weights(3).W_in)
    assert not torch.equal(view.attention_weights(0).W_Q, weights.attention_weights(0).W_Q)
    with pytest.raises(InputError):
        view.attention_weights(2)


def test_only_layer_separable_analyses_run_layer_parallel(run_folders):
    with pytest.raises(InputError, match="not layer-parallel"):
        wb.distributed.layer_parallel(run_folders[0], "head_composition", cluster="unused")


def test_split_layers():
    assert split_layers(4, 3) == [(0,), (1, 2), (3,)]
    assert split_layers(2, 8) == [(0,), (1,)]
    assert sum(map(len, split_layers(30, 7))) == 30


# ------------------------------------------------------------------ the command line
def test_the_cluster_command_runs_each_workload_on_an_existing_cluster(cluster, run_folders, tmp_path, capsys):
    from workbench.cli import main

    address = ["--address", cluster.address]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the\n\nOne, two, three,\n")
    assert main(["cluster", "attribute", "--prompts", str(prompts), "-m", "tiny-llama", "--method", "occlusion",
                 *address]) == 0
    out = capsys.readouterr().out
    assert "The cat sat on the" in out and "One, two, three," in out and "2 computed, 0 read from the cache" in out
    page = tmp_path / "series.html"
    assert main(["cluster", "checkpoints", *map(str, run_folders), "--analysis", "overview", "--out", str(page),
                 *address]) == 0
    out = capsys.readouterr().out
    assert all(f.name in out for f in run_folders) and page.stat().st_size > 10_000
    assert main(["cluster", "layers", str(run_folders[0]), "--parts", "2", *address]) == 0
    assert "outlier_ratio" in capsys.readouterr().out
    assert main(["cluster", "attribute", "--prompts", str(tmp_path / "none.txt"), *address]) == 2
    assert "no prompts file" in capsys.readouterr().err


def test_without_dask_the_cluster_says_which_extra_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # importing it now raises ImportError
    with pytest.raises(wb.MissingExtraError, match=r"pip install 'lm-workbench\[cluster\]'"):
        wb.distributed.cluster()
