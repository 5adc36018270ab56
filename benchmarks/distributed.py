"""wb.distributed against one process at equal cores: are the results equal, and what does the cluster cost?

    python benchmarks/distributed.py [--quick] [--workers N] [--json out.json]

Three workloads, each run twice in this one script: by one process with N threads (``WORKBENCH_THREADS=N``)
and on a local Dask cluster of N single-threaded workers (N: the cores this process may use), every run
with ``cache=False`` or an empty cache folder, so both compute everything:

- ``dataset``: integrated-gradients attribution of a list of prompts on a tiny Llama (``--quick``) or the
  embedded SmolLM2-135M, one task per prompt;
- ``checkpoints``: head composition of every checkpoint of a pretend training run (tiny Llamas saved at several
  steps, the weights drifting), one task per checkpoint, read from shards;
- ``layers``: the overview of one checkpoint's shards, its layers split into one range per worker.

``equal`` means every Result of the cluster equals the single process's to the bit (tensors with NaN where
both have NaN, tables exactly, meta), computed at one thread as each worker computes: the timed N-thread run
splits float32 reductions differently, and its largest relative difference is printed beside (``vs N threads``). The cluster's times include what its workers spend loading their models
(the single process loads once, and that load is in its time too); the cluster's start is timed on its own.
Then the dataset runs once more on the cluster with a worker killed at its first task (SIGKILL, as a crash):
``killed worker survived`` when every result came back equal and the dead process ran none of them.

``--equality-only`` checks equality and the killed worker without timing (no lock, no times printed).
Timing takes the lock ``/tmp/wb-timing.lock`` (other timed runs wait) and prints the machine's load before and
after: on a shared machine the ratios, not the seconds, are the figures to read. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
# this file's folder leaves the path: its name would shadow Dask's own package ``distributed``
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))  # the pretend training run, KillOnce

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench._threads import allowed_cpus  # noqa: E402

PROMPTS = ["The cat sat on the mat because", "Paris is the capital of", "One, two, three, four,", "The sun rises in the",
           "Water boils at a temperature of", "The opposite of hot is", "Monday, Tuesday,", "A dog is an animal that",
           "The first letter of the alphabet is", "Ice is frozen", "Two plus two equals", "The colour of the sky is"]


@contextmanager
def timing_lock():
    with open("/tmp/wb-timing.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def threads(n: int):
    before = os.environ.get("WORKBENCH_THREADS")
    os.environ["WORKBENCH_THREADS"] = str(n)
    try:
        yield
    finally:
        os.environ.pop("WORKBENCH_THREADS") if before is None else os.environ.__setitem__("WORKBENCH_THREADS", before)


def differences(a: wb.Result, b: wb.Result) -> list[str]:
    """What differs between two results (empty: equal to the bit)."""
    out = []
    if type(a) is not type(b) or a.config != b.config:
        out.append("type or config")
    if (a.model_id, a.fingerprint, a.meta) != (b.model_id, b.fingerprint, b.meta):
        out.append("identity or meta")
    if a.tensors.keys() != b.tensors.keys():
        out.append("tensor names")
    for k in a.tensors.keys() & b.tensors.keys():
        x, y = a.tensors[k], b.tensors[k]
        if x.dtype != y.dtype or x.shape != y.shape or not bool(((x == y) | (x.isnan() & y.isnan())).all()):
            out.append(f"tensor {k}")
    for k in a.tables.keys() | b.tables.keys():
        try:
            pd.testing.assert_frame_equal(a.tables[k], b.tables[k], check_exact=True)
        except (AssertionError, KeyError):
            out.append(f"table {k}")
    return out


def max_relative_difference(ours: list, theirs: list) -> float:
    """Largest |a - b| / max |b| over every tensor of every pair of results (NaN where both are NaN ignored)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        for k in a.tensors.keys() & b.tensors.keys():
            x, y = a.tensors[k].double(), b.tensors[k].double()
            if x.shape != y.shape:
                return float("inf")
            both = ~(x.isnan() & y.isnan())
            if both.any():
                scale = y[both].abs().max().clamp_min(1e-300)
                worst = max(worst, float(((x - y)[both].abs().max() / scale).nan_to_num(nan=float("inf"))))
    return worst


def compare(name: str, ours: list, theirs: list) -> str:
    bad = [f"#{i}: {', '.join(d)}" for i, (a, b) in enumerate(zip(ours, theirs)) if (d := differences(a, b))]
    return "equal" if not bad and len(ours) == len(theirs) else f"NOT EQUAL ({name}: {'; '.join(bad[:3])})"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only (~1-2 min on 2 cores)")
    parser.add_argument("--workers", type=int, default=len(allowed_cpus()))
    parser.add_argument("--json", default=None)
    parser.add_argument("--equality-only", action="store_true",
                        help="check equality and the killed worker only: no lock taken, no times printed")
    args = parser.parse_args()
    n = args.workers

    from support.training_run import KillOnce, save_training_run

    tmp = Path(tempfile.mkdtemp(prefix="wb-distributed-bench-"))
    os.environ["WORKBENCH_CACHE"] = str(tmp / "cache")  # the models' conversions; results go to per-run folders
    model_name = "tiny-llama" if args.quick else None
    prompts = PROMPTS + [f"{p} and" for p in PROMPTS] if args.quick else PROMPTS
    ig = dict(method="integrated_gradients", ig_steps=16 if args.quick else 32, max_new_tokens=3)
    steps = (0, 250, 500, 750) if args.quick else tuple(range(0, 1001, 125))
    run = save_training_run(tmp / "run", steps, n_layers=4 if args.quick else 8)
    wide_layers = 8 if args.quick else 16
    wide = save_training_run(tmp / "wide", (1000,), n_layers=wide_layers)[0]
    composition = dict(null_samples=32)
    rows = []

    with nullcontext() if args.equality_only else timing_lock():
        load_before = os.getloadavg()
        # ---------------------------------------------------------------- one process, N threads
        with threads(n):
            def single_dataset():
                model = wb.load_model(model_name, progress=False)
                return [wb.attribute(model, prompt=p, cache=False, **ig) for p in prompts]
            single_attr, t_single_attr = timed(single_dataset)
            single_ckpt, t_single_ckpt = timed(
                lambda: [wb.head_composition(wb.load_weights(f), cache=False, **composition) for f in run])
            single_over, t_single_over = timed(lambda: wb.model_overview(wb.load_weights(wide), cache=False))

        # the references for equality: the same computations at one thread, as each worker computes (float32
        # reductions split over another number of threads round differently, ~1e-7 relative: not timed)
        with threads(1):
            model = wb.load_model(model_name, progress=False)
            ref_attr = [wb.attribute(model, prompt=p, cache=False, **ig) for p in prompts]
            ref_ckpt = [wb.head_composition(wb.load_weights(f), cache=False, **composition) for f in run]
            ref_over = wb.model_overview(wb.load_weights(wide), cache=False)

        # ---------------------------------------------------------------- the cluster, N workers x 1 thread
        cluster, t_start = timed(lambda: wb.distributed.cluster(n_workers=n))
        with cluster:
            dist_attr, t_attr = timed(lambda: wb.distributed.attribute_dataset(
                model_name, prompts, cache_root=tmp / "c1", **ig).results)
            dist_ckpt, t_ckpt = timed(lambda: wb.distributed.run_checkpoints(
                run, "head_composition", cache_root=tmp / "c2", **composition))
            dist_over, t_over = timed(lambda: wb.distributed.layer_parallel(wide, "overview", cache=False))
            # a worker killed at its first task of the dataset
            marker = tmp / "killed"
            cluster.client.register_plugin(KillOnce(str(marker), "attribute_task"), name="kill-once")
            killed_run, t_killed = timed(lambda: wb.distributed.attribute_dataset(
                model_name, prompts, cache_root=tmp / "c3", **ig))
            cluster.client.unregister_worker_plugin("kill-once")
        load_after = os.getloadavg()

    killed = int(marker.read_text()) if marker.exists() else None
    killed_equal = compare("killed", killed_run.results, ref_attr)
    survived = killed is not None and killed not in killed_run.workers and killed_equal == "equal"
    for name, ours, ref, timed_single, t_one, t_many, what in (
            ("dataset", dist_attr, ref_attr, single_attr, t_single_attr, t_attr,
             f"{len(prompts)} prompts, {model_name or 'SmolLM2-135M'}"),
            ("checkpoints", dist_ckpt, ref_ckpt, single_ckpt, t_single_ckpt, t_ckpt, f"{len(run)} checkpoints, head composition"),
            ("layers", [dist_over], [ref_over], [single_over], t_single_over, t_over, f"overview, {wide_layers} layers from shards")):
        rows.append({"workload": name, "what": what, "one process s": round(t_one, 2), "cluster s": round(t_many, 2),
                     "overhead": round(t_many / t_one, 2), "result": compare(name, ours, ref),
                     f"vs {n} threads": f"{max_relative_difference(ours, timed_single):.1e}"})
    table = pd.DataFrame(rows)
    if args.equality_only:  # times taken without the lock are not figures
        table = table.drop(columns=["one process s", "cluster s", "overhead"])
        t_start = t_killed = float("nan")
    print(f"wb.distributed vs one process at equal cores: {n} workers x 1 thread vs 1 process x {n} threads "
          f"({os.cpu_count()} CPUs on the machine)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute; "
          f"{'busy: other programs shared the cores' if max(load_before[0], load_after[0]) > n else 'quiet'})")
    print(table.to_string(index=False))
    print(f"cluster start: {t_start:.2f} s (not in the rows)")
    print(f"killed worker survived: {survived} (worker pid {killed} killed at its first task; the dataset rerun "
          f"took {t_killed:.2f} s, {killed_run.n_computed} of {len(prompts)} computed; results {killed_equal}; "
          f"{len(set(killed_run.workers))} worker processes ran them)")
    # negative control: the same comparison rejects a result with one spectrum value nudged by one ulp
    name = next(k for k in single_over.tensors if k.startswith("sv/"))
    nudged = single_over.tensors[name].clone()
    nudged.view(-1)[0] = torch.nextafter(nudged.view(-1)[0], torch.tensor(float("inf")))
    control = type(single_over)(config=single_over.config, model_id=single_over.model_id,
                                fingerprint=single_over.fingerprint, tensors={**single_over.tensors, name: nudged},
                                tables=single_over.tables, meta=single_over.meta)
    print(f"negative control (one value of {name} one ulp off): {compare('control', [dist_over], [control])}")
    print(f"result: against one process at one thread, as each worker computes; 'vs {n} threads': the largest "
          f"relative difference of any tensor from the timed {n}-thread run (float32 round-off of another split)")
    print("equal" if all(r["result"] == "equal" for r in rows) and survived else "NOT EQUAL")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cluster_start_s": t_start, "killed_survived": survived,
                                               "load_before": load_before, "load_after": load_after,
                                               "workers": n}, indent=1))


if __name__ == "__main__":
    main()
