"""Device check: the workbench on a GPU, in one call, against the CPU.

    python benchmarks/device_check.py                        # on the GPU machine (carry .whl: device_wheels.sh)
    python benchmarks/device_check.py --device cpu --quick   # the CPU rehearsal the test suite runs (seconds)

The GPU machine lacks transformer-lens and what it imports (``benchmarks/device_wheels.sh`` builds them into the
git-ignored ``.whl/``); this script installs them offline into a temporary folder before it imports anything of
the workbench. It writes its JSON (``--json``, default ``$OUT/device_check.json`` or ``./device_check.json``) after
every step, prints unbuffered, and stops itself before ``--deadline`` seconds (default 480): a step that cannot
finish in the time left is skipped, and a watchdog writes what was done and exits if one overruns.

Steps, in order (random-weight Llama models of real shapes, seeded: the embedded model's GGUF does not travel):
 1. imports and versions (Python, torch, CUDA, transformers, transformer-lens, ...);
 2. every analysis on the device, float32, SmolLM2-135M's shape: no device mismatch (an error is reported by name);
 3. the same on the CPU, compared: every tensor and every table (floats: largest difference over the largest value;
    labels: share of rows that differ, rows aligned on their label columns), eigenvector signs fixed, ReAGent's
    probes in float32 (``probe_dtype=None``), TF32 off;
 4. fingerprints of the same weights equal on the CPU and on the device;
 5. a result computed on the device, cached, read back in a fresh process (a disk hit, equal);
 6. ``wb.load_weights(folder, device=<device>)`` equal to the in-memory run (overview, head composition);
 7. a GPU + CPU device map: refused by ``wb.load_model`` with what to do instead; then booted around the refusal
    to record whether the bridge would be right on it (equal to the one-device run) — needs CUDA;
 8. the 1.1B (TinyLlama) and 7B (Llama-2) shapes in bfloat16: seconds and peak GPU memory per analysis.
``--quick``: two tiny shapes instead of the real ones (what tests/test_device_check.py runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".whl"
OUT_DEFAULT = Path(os.environ.get("OUT", ".")) / "device_check.json"
for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("WORKBENCH_PROGRESS", "0"),
                    ("PYTHONUNBUFFERED", "1")):
    os.environ.setdefault(name, value)

SHAPES = {  # name -> (layers, d_model, heads, kv heads, d_mlp, vocab, tied embeddings)
    "SmolLM2-135M": (30, 576, 9, 3, 1536, 49152, True),
    "TinyLlama-1.1B": (22, 2048, 32, 4, 5632, 32000, False),
    "Llama-2-7B": (32, 4096, 32, 32, 11008, 32000, False),
}
QUICK = {"tiny": (2, 64, 4, 2, 128, 259, True), "tiny-wide": (3, 128, 4, 4, 256, 259, False)}
PROMPT = "The cat sat on the mat. The cat"
TOLERANCE = 1e-3  # float32, device vs CPU: largest difference / largest value, per tensor and table column
LABEL_TOLERANCE = 0.02  # share of table rows whose labels (ints, text) differ: near-ties may order differently
SIGNED = ("top_vectors",)  # result tensors of eigenvectors: each vector's sign is arbitrary (eigh's, per device)
STEP_NEEDS = {  # a step starts only with at least this many seconds left (full shapes; --quick: a tenth)
    "imports": 0, "analyses on the device": 90, "agreement with the CPU": 120, "fingerprints": 20,
    "cache in a fresh process": 60, "load_weights on the device": 30, "GPU + CPU device map": 40, "big shapes": 60}


def say(*parts) -> None:
    print(*parts, flush=True)


# ------------------------------------------------------------------ the report, written after every step
class Report:
    def __init__(self, path: Path, deadline_s: float, argv: list[str]):
        self.path, self.start, self.deadline = path, time.monotonic(), time.monotonic() + deadline_s
        self.doc: dict = {"argv": argv, "deadline_s": deadline_s, "status": "running", "steps": []}
        self.current = ""
        self.lock = threading.Lock()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write(self) -> None:
        with self.lock:
            self.doc["elapsed_s"] = round(time.monotonic() - self.start, 2)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.doc, indent=1, default=_plain))
            os.replace(tmp, self.path)

    def add(self, step: dict) -> None:
        self.doc["steps"].append(step)
        self.write()

    def watchdog(self) -> None:
        """At the deadline, record where the run was and leave (a hung kernel or a slow step must not cost the
        whole call: the caller's time limit would kill the process before it wrote anything)."""
        def watch():
            time.sleep(max(self.left(), 0))
            self.doc["status"] = f"stopped by the watchdog at the deadline, during {self.current!r}"
            self.write()
            say(f"\nDEADLINE: stopped during {self.current!r}; JSON in {self.path}")
            os._exit(3)
        threading.Thread(target=watch, daemon=True).start()


def _plain(value) -> str:
    return str(value)  # anything JSON cannot hold (paths, dtypes) as text


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ------------------------------------------------------------------ the wheels the machine lacks
def install_wheelhouse(folder: Path) -> dict:
    """Install ``folder``'s wheels offline into a temporary folder put first on the import path (``--no-deps``: the
    machine's torch and transformers stay); child processes get it through PYTHONPATH."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return {"wheelhouse": str(folder), "wheels": []}
    target = Path(tempfile.mkdtemp(prefix="wb-device-site-"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--disable-pip-version-check", "--target", str(target),
                           *map(str, wheels)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"installing {folder}: {done.stderr.strip()[-1500:]}")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {"wheelhouse": str(folder), "wheels": [w.name for w in wheels], "target": str(target),
            "install_s": round(time.perf_counter() - start, 1)}


# ------------------------------------------------------------------ models and analyses
def hf_model(shape: tuple, device: str, dtype, seed: int = 0):
    """A seeded random-weight Llama model of ``shape``, made on ``device`` (the CPU and a GPU give different draws
    for one seed: use ``.to(device)`` of a CPU-made model where the weights must be equal)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    layers, d, heads, kv, mlp, vocab, tied = shape
    config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                         tie_word_embeddings=tied, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def hooked(hf, tokenizer, name: str):
    from workbench.models.loading import from_hf

    return from_hf(hf, tokenizer, name)


def analyses(model, *, float32_probes: bool = False) -> dict:
    """Every analysis of the report, with settings small enough for a 7B model in seconds on a GPU."""
    import workbench as wb

    probe = {"probe_dtype": None} if float32_probes else {}
    return {
        "overview": lambda: wb.model_overview(model, cache=False),
        "head composition": lambda: wb.head_composition(model, cache=False),
        "head effects": lambda: wb.head_effects(model, prompts=(PROMPT,), n_writers=2, cache=False),
        "super weights": lambda: wb.super_weights(model, eval_windows=2, window=32, cache=False),
        "super-weight trace": lambda: wb.trace_super_weight(model, weight=(1, 3, 5), prompt=PROMPT, cache=False),
        "bilinear replacement": lambda: wb.bilinear_replacement(model, layer=0, cache=False),
        "ReAGent": lambda: wb.reagent(model, prompt=PROMPT, max_steps=10, cache=False, **probe),
    }


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_all(model, device: str, report: Report, **options) -> tuple[dict, dict]:
    """(results, per-analysis row) of every analysis; a failure is kept as its one-line message."""
    import torch

    results, rows = {}, {}
    for name, run in analyses(model, **options).items():
        report.current = name
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        try:
            results[name] = run()
            error = ""
        except Exception as exc:  # reported, the check goes on
            results[name], error = None, one_line(exc)
        sync(device)
        rows[name] = {"s": round(time.perf_counter() - start, 3), "error": error}
        if device.startswith("cuda"):
            rows[name]["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        say(f"  {name}: {rows[name]['s']:.2f} s {error}")
    return results, rows


# ------------------------------------------------------------------ comparing results
def _relative(x, y) -> float:
    """Largest |x - y| over the largest |x| among finite entries; inf where finiteness or shapes differ."""
    import torch

    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if x.shape != y.shape or not torch.equal(torch.isfinite(x), torch.isfinite(y)):
        return math.inf
    finite = torch.isfinite(x)
    if not finite.any():
        return 0.0
    scale = max(x[finite].abs().max().item(), 1e-30)
    return (x[finite] - y[finite]).abs().max().item() / scale


def aligned_signs(x, y):
    """``y`` with each vector (last dimension) flipped to point the way the same vector of ``x`` does."""
    dots = (x.double() * y.double()).sum(-1, keepdim=True)
    return y * (dots >= 0).to(y.dtype).mul(2).sub(1)


def compare_tensors(a: dict, b: dict) -> dict[str, float]:
    out = {}
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out[key] = math.inf
            continue
        x, y = a[key], b[key]
        if not x.is_floating_point():
            out[key] = 0.0 if torch_equal(x, y) else math.inf
            continue
        if key.split("/")[-1] in SIGNED and x.shape == y.shape:
            y = aligned_signs(x, y)
        out[key] = _relative(x, y)
    return out


def torch_equal(x, y) -> bool:
    import torch

    return x.shape == y.shape and torch.equal(x.cpu(), y.cpu())


def compare_tables(a: dict, b: dict) -> dict[str, dict]:
    """Per table: ``float`` the largest relative difference over its float columns, ``labels`` the share of rows
    whose non-float cells differ. Rows are aligned by sorting on the label columns, so that a near-tie ordered
    differently on another device does not shift every row after it."""
    import numpy as np
    import pandas as pd
    import torch

    out = {}
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or list(a[name].columns) != list(b[name].columns) or len(a[name]) != len(b[name]):
            out[name] = {"float": math.inf, "labels": 1.0}
            continue
        x, y = a[name], b[name]
        floats = [c for c in x.columns if x[c].dtype.kind == "f"]
        labels = [c for c in x.columns if c not in floats]
        if labels and len(x):  # sorted on the cells' text: list-valued cells (tied tokens) cannot be hashed
            x, y = (t.iloc[t[labels].astype(str).sort_values(labels, kind="stable").index].reset_index(drop=True)
                    for t in (x, y))
        differ = np.zeros(len(x), dtype=bool)
        for c in labels:
            differ |= ~(x[c].astype(str).to_numpy() == y[c].astype(str).to_numpy())
        worst = 0.0
        for c in floats:
            xs, ys = (torch.from_numpy(pd.to_numeric(t[c]).to_numpy(dtype=float, copy=True)) for t in (x, y))
            worst = max(worst, _relative(xs, ys))
        out[name] = {"float": worst, "labels": float(differ.mean()) if len(x) else 0.0}
    return out


def compare(a, b) -> dict:
    """Device result ``a`` against CPU result ``b`` (None: it failed)."""
    if a is None or b is None:
        return {"ok": False, "why": "failed on " + ("both" if a is None and b is None else "one side")}
    tensors, tables = compare_tensors(a.tensors, b.tensors), compare_tables(a.tables, b.tables)
    worst_t = max(tensors.values(), default=0.0)
    worst_f = max((t["float"] for t in tables.values()), default=0.0)
    worst_l = max((t["labels"] for t in tables.values()), default=0.0)
    row = {"tensors": worst_t, "tables_float": worst_f, "tables_labels": worst_l,
           "ok": worst_t <= TOLERANCE and worst_f <= TOLERANCE and worst_l <= LABEL_TOLERANCE}
    if not row["ok"]:
        row["worst"] = {**{f"tensor {k}": v for k, v in tensors.items() if v > TOLERANCE},
                        **{f"table {k}": v for k, v in tables.items()
                           if v["float"] > TOLERANCE or v["labels"] > LABEL_TOLERANCE}}
    return row


# ------------------------------------------------------------------ the steps
def step_imports(device: str) -> dict:
    import importlib.metadata as md
    import platform

    import torch

    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "transformer-lens", "accelerate", "datasets", "dill", "multiprocess",
                 "numpy", "pandas", "pyarrow", "safetensors", "tokenizers", "huggingface-hub", "jaxtyping"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    import transformer_lens  # noqa: F401  the import the device check used to die on

    import workbench

    versions["workbench"] = workbench.__version__
    versions["workbench_from"] = str(Path(workbench.__file__).parent)
    cuda = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        cuda.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1))
    return {"ok": True, "versions": versions, "cuda": cuda, "device": device}


def _floats_off_tf32() -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help="two tiny shapes (seconds; what the test runs)")
    parser.add_argument("--json", default=str(OUT_DEFAULT), help="where the report goes (written after every step)")
    parser.add_argument("--deadline", type=float, default=480.0, help="seconds; the run stops itself before it")
    parser.add_argument("--wheelhouse", default=str(WHEELHOUSE), help="wheels to install first (default .whl/)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps (names as in the JSON)")
    parser.add_argument("--child-cache", nargs=3, metavar=("CACHE", "SHAPE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_cache:
        return child_cache(*args.child_cache)
    report = Report(Path(args.json), args.deadline, sys.argv[1:])
    report.watchdog()
    say(f"device check: JSON to {args.json}, deadline {args.deadline:.0f} s")
    try:
        report.doc["install"] = install_wheelhouse(Path(args.wheelhouse))
    except Exception as exc:
        report.doc["install"] = {"error": one_line(exc)}
    report.write()
    sys.path.insert(0, str(ROOT))
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shapes = QUICK if args.quick else SHAPES
    small_name, small = next(iter(shapes.items()))
    state: dict = {"tmp": Path(tempfile.mkdtemp(prefix="wb-device-check-")), "report": report}
    steps = [
        ("imports", lambda: step_imports(device)),
        ("analyses on the device", lambda: step_device_runs(small, small_name, device, state, report)),
        ("agreement with the CPU", lambda: step_agreement(small, small_name, state, report)),
        ("fingerprints", lambda: step_fingerprints(small, device, state)),
        ("cache in a fresh process", lambda: step_cache(small, small_name, device, state)),
        ("load_weights on the device", lambda: step_load_weights(small, device, state)),
        ("GPU + CPU device map", lambda: step_device_map(small, device, state)),
        ("big shapes", lambda: step_big(shapes, small_name, device, state, report)),
    ]
    scale = 0.1 if args.quick else 1.0
    for name, run in steps:
        if args.only is not None and name not in args.only:
            continue
        report.current = name
        say(f"\n== {name} ({report.left():.0f} s left)")
        needs = STEP_NEEDS[name] * scale
        if report.left() < needs:
            report.add({"step": name, "ok": None, "skipped": f"{report.left():.0f} s left, needs ~{needs:.0f}"})
            say("  skipped: too little time left")
            continue
        start = time.perf_counter()
        try:
            row = run()
        except Exception as exc:
            row = {"ok": False, "error": one_line(exc), "traceback": traceback.format_exc()[-3000:]}
        row = {"step": name, **row, "s": round(time.perf_counter() - start, 2)}
        report.add(row)
        say(f"  -> ok: {row.get('ok')}" + (f" ({row['error']})" if row.get("error") else "")
            + (f" (skipped: {row['skipped']})" if row.get("skipped") else ""))
    failed = [s["step"] for s in report.doc["steps"] if s.get("ok") is False]
    report.doc["status"] = "done" + (f"; failed: {failed}" if failed else "; nothing failed")
    report.write()
    say(f"\n{report.doc['status']} in {time.monotonic() - report.start:.0f} s; JSON in {args.json}")


def step_device_runs(shape, name, device, state, report) -> dict:
    import torch

    from workbench.models.tiny import byte_tokenizer

    _floats_off_tf32()
    state["tokenizer"] = byte_tokenizer(state["tmp"] / "tokenizer")
    model = hooked(hf_model(shape, "cpu", torch.float32).to(device), state["tokenizer"], name)
    state["device_model"] = model
    results, rows = run_all(model, device, report, float32_probes=True)
    state["device_results"] = results
    off = {n: sorted({t.device.type for t in r.tensors.values()} - {"cpu"}) for n, r in results.items() if r is not None}
    for n, devices in off.items():
        if devices:
            rows[n]["error"] = (rows[n]["error"] + f"; tensors left on {devices}").lstrip("; ")
    return {"ok": all(not r["error"] for r in rows.values()), "shape": name, "dtype": "float32", "analyses": rows}


def step_agreement(shape, name, state, report) -> dict:
    import torch

    if "device_results" not in state:
        return {"ok": None, "skipped": "no device results (the step before did not run)"}
    model = hooked(hf_model(shape, "cpu", torch.float32), state["tokenizer"], name)
    cpu, rows = run_all(model, "cpu", report, float32_probes=True)
    state["cpu_model"] = model
    out = {}
    for analysis in cpu:
        out[analysis] = {"cpu_s": rows[analysis]["s"], **compare(state["device_results"][analysis], cpu[analysis])}
        say(f"  {analysis}: {json.dumps({k: v for k, v in out[analysis].items() if k != 'worst'}, default=_plain)}")
    return {"ok": all(r["ok"] for r in out.values()), "tolerance": TOLERANCE, "label_tolerance": LABEL_TOLERANCE,
            "analyses": out}


def step_fingerprints(shape, device, state) -> dict:
    import torch

    cpu = state.get("cpu_model") or hooked(hf_model(shape, "cpu", torch.float32), state["tokenizer"], "cpu")
    dev = state.get("device_model") or hooked(hf_model(shape, "cpu", torch.float32).to(device), state["tokenizer"], "dev")
    a, b = cpu.fingerprint(), dev.fingerprint()
    return {"ok": a == b, "cpu": a, "device": b}


def step_cache(shape, name, device, state) -> dict:
    """Computed on the device into a fresh cache folder; a second process (CPU, same seeded weights) must read it
    from disk — not recompute it — and get the same result."""
    import torch

    import workbench as wb

    model = state.get("device_model") or hooked(hf_model(shape, "cpu", torch.float32).to(device), state["tokenizer"], name)
    folder = state["tmp"] / "cache"
    cache = wb.ResultCache(folder)
    computed = wb.head_composition(model, cache=cache)
    out = state["tmp"] / "from_child.safetensors"
    key = json.dumps([list(shape), name])
    done = subprocess.run([sys.executable, __file__, "--child-cache", str(folder), key, str(out)],
                          capture_output=True, text=True, timeout=max(state["report"].left(), 30))
    if done.returncode:
        return {"ok": False, "error": f"child process: {done.stderr.strip()[-1500:]}"}
    child = json.loads(done.stdout.strip().splitlines()[-1])
    again = wb.Result.load(out)
    same = compare(computed, again)
    return {"ok": child["disk_hits"] == 1 and child["misses"] == 0 and same["tensors"] == 0.0
            and same["tables_float"] == 0.0 and same["tables_labels"] == 0.0,
            "child": child, "equal": same}


def child_cache(folder: str, key: str, out: str) -> None:
    """The fresh process of :func:`step_cache`."""
    sys.path.insert(0, str(ROOT))
    import torch

    import workbench as wb
    from workbench.models.tiny import byte_tokenizer

    shape, name = json.loads(key)
    tokenizer = byte_tokenizer(Path(tempfile.mkdtemp()))
    model = hooked(hf_model(tuple(shape), "cpu", torch.float32), tokenizer, name)
    cache = wb.ResultCache(folder)
    wb.head_composition(model, cache=cache).save(out)
    print(json.dumps(cache.stats))


def _saved(shape, state) -> Path:
    import torch

    folder = state["tmp"] / "checkpoint"
    if not folder.exists():
        hf_model(shape, "cpu", torch.float32).save_pretrained(folder)
        state["tokenizer"].save_pretrained(folder)
    return folder


def step_load_weights(shape, device, state) -> dict:
    import workbench as wb

    if "device_results" not in state:
        return {"ok": None, "skipped": "no in-memory device results"}
    weights = wb.load_weights(_saved(shape, state), device=device)
    out = {}
    for analysis, run in (("overview", wb.model_overview), ("head composition", wb.head_composition)):
        reference = state["device_results"][analysis]
        out[analysis] = compare(run(weights, cache=False), reference)
    loaded = wb.load_model(_saved(shape, state), device=device, progress=False)  # the fingerprint covers the config:
    fp = weights.fingerprint() == loaded.fingerprint()  # the same folder loaded whole, not the from_config model
    return {"ok": fp and all(r["ok"] for r in out.values()), "fingerprint_equal_to_load_model": fp, "analyses": out}


def step_device_map(shape, device, state) -> dict:
    """Half the layers on the GPU, the rest and the head in CPU memory. ``wb.load_model`` refuses such a map
    (``models/placement.py``: TransformerLens's bridge refuses it too, unverified on a GPU); the refusal must come
    before loading and name what to do instead. Then, to learn whether the bridge would be right on it, the same
    map is booted around both refusals and two hooked analyses are compared with the one-device run: evidence for
    lifting the refusal, never a path the library takes."""
    import transformer_lens.utilities.multi_gpu as tl_multi_gpu  # the bridge imports its check from here at boot
    from transformers import AutoModelForCausalLM

    import workbench as wb
    from workbench.errors import UnsupportedModelError
    from workbench.models import loading

    if not device.startswith("cuda"):
        return {"ok": None, "skipped": "needs a GPU (a GPU + CPU map)"}
    layers = shape[0]
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": "cpu", "lm_head": "cpu",
                  **{f"model.layers.{i}": (0 if i < layers // 2 else "cpu") for i in range(layers)}}
    folder = _saved(shape, state)
    out: dict = {}
    try:
        wb.load_model(folder, device_map=device_map, progress=False)
        out["refused"] = None
    except UnsupportedModelError as exc:
        out["refused"] = one_line(exc)
    hf = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map, dtype="float32")
    checks = loading.check_placement, tl_multi_gpu.is_mixed_offload_gpu
    loading.check_placement, tl_multi_gpu.is_mixed_offload_gpu = (lambda hf_model: None), (lambda values: False)
    try:
        model = loading.from_hf(hf, state["tokenizer"], "mixed-map")
        around = {}
        for analysis in ("super weights", "ReAGent"):
            try:
                around[analysis] = compare(analyses(model, float32_probes=True)[analysis](),
                                           state["device_results"][analysis])
            except Exception as exc:
                around[analysis] = {"ok": False, "error": one_line(exc)}
    except Exception as exc:
        around = {"boot": {"ok": False, "error": one_line(exc)}}
    finally:
        loading.check_placement, tl_multi_gpu.is_mixed_offload_gpu = checks
    out["around_the_refusal"] = around
    out["would_be_right"] = all(r.get("ok") for r in around.values())
    return {"ok": out["refused"] is not None, **out}


def step_big(shapes, small_name, device, state, report) -> dict:
    import torch

    out = {}
    for name, shape in shapes.items():
        if name == small_name:
            continue
        if report.left() < STEP_NEEDS["big shapes"] * (0.1 if name in QUICK else 1.0):
            out[name] = {"skipped": f"{report.left():.0f} s left"}
            continue
        dtype = torch.bfloat16
        start = time.perf_counter()
        say(f"  {name} ({dtype})")
        model = hooked(hf_model(shape, device, dtype), state["tokenizer"], name)
        build_s = time.perf_counter() - start
        results, rows = run_all(model, device, report)
        out[name] = {"dtype": str(dtype).removeprefix("torch."), "params": model.facts.n_params, "build_s": round(build_s, 1),
                     "analyses": rows}
        report.doc.setdefault("partial", {})[name] = out[name]
        report.write()
        del model, results
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"ok": all(not r["error"] for s in out.values() for r in s.get("analyses", {}).values()), "shapes": out}


if __name__ == "__main__":
    main()
