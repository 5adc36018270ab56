"""Workbench benchmarks: our code paths side by side with a named baseline, in one run.

    python benchmarks/run.py [--repeat N] [--device cpu|cuda] [--json out.json] [--only NAME ...]

Entries (see benchmarks/README.md):
  load     cold / warm ``wb.load_model()`` vs plain transformers loads, each in a fresh process
  forward  HF forward (eager, sdpa) vs our forward and ``run_with_cache`` on the embedded model
  cache    ``model_overview`` recomputed vs served from the disk / memory result cache

Figures are medians of ``--repeat`` runs after warm-up, reported as ratios to the baseline.
Nothing here asserts on time: the figures are for reading, not for pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF conversion bar ignores its own switch

ENTRIES = ("load", "forward", "cache")
RESULT_MARK = "BENCH_RESULT "
BATCH, SEQ = 4, 128
PROMPT_MODULES = ("argparse", "csv", "json", "unittest")  # docstrings: real English, fixed per Python version


# ----------------------------------------------------------------- helpers
def median_times(cases: dict, repeat: int, warmup: int = 2, sync=lambda: None) -> dict[str, float]:
    """Median wall seconds of each ``fn()`` in ``cases`` over ``repeat`` runs, after ``warmup`` untimed runs.

    Cases run round-robin, so a slow spell on a shared machine hits all of them alike.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def row(name: str, value: float, base: float, unit: str, notes: str = "", **extra) -> dict:
    """One table row; ``ratio`` is ours / baseline (1.00 = same, >1 = slower or bigger)."""
    return {"name": name, unit: value, "ratio": value / base if base else float("nan"), "notes": notes, **extra}


def print_table(title: str, baseline: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` under ``title``; ``columns`` = (key, header, format)."""
    print(f"\n== {title}   (ratio = row / {baseline})")
    cells = [[h for _, h, _ in columns] + ["notes"]]
    cells += [[format(r[k], f) if isinstance(r.get(k), (int, float)) else str(r.get(k, "")) for k, _, f in columns]
              + [r.get("notes", "")] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for i, c in enumerate(cells):
        print("  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(c, widths))) + "  " + c[-1])
        if i == 0:
            print("-" * (sum(widths) + 2 * len(widths) + 5))


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far (this process and its finished children, the whole machine).

    The machine figure comes from /proc/stat (Linux; NaN elsewhere): their difference
    over a stretch of time is what other programs took from us meanwhile.
    """
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError):
        machine = float("nan")
    return ours, machine


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by other programs right now, sampled over ``seconds``."""
    (ours0, all0), start = cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    (ours1, all1), wall = cpu_seconds(), time.perf_counter() - start
    return max(0.0, (all1 - all0) - (ours1 - ours0)) / wall


def machine_facts(device: str) -> dict:
    from importlib.metadata import version

    import torch

    import workbench as wb

    facts = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "torch": torch.__version__, "transformers": version("transformers"),
        "transformer_lens": version("transformer-lens"), "workbench": wb.__version__,
        "device": device, "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "others_busy_cores": round(busy_cores(), 2),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


# -------------------------------------------------------------------- load
def load_child(kind: str, root: str, device: str) -> None:
    """In a fresh process: import, load one way, print times and peak RSS as one JSON line."""
    start = time.perf_counter()
    import torch  # noqa: F401
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import workbench as wb
    from workbench.models.gguf import dequantized_folder, embedded_gguf_path

    transformers.logging.set_verbosity_error()
    imported = time.perf_counter()
    gguf = embedded_gguf_path()
    if kind in ("wb-cold", "wb-warm"):
        wb.load_model(cache_dir=root, device=device, progress=False)
    elif kind == "hf-gguf":
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).to(device)
    elif kind == "hf-folder":
        folder = dequantized_folder(gguf, Path(root))  # already built by wb-cold: only located here
        AutoTokenizer.from_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder).to(device)
    done = time.perf_counter()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(RESULT_MARK + json.dumps({"import_s": imported - start, "load_s": done - imported, "rss_mb": rss_mb}))


def run_child(kind: str, root: Path, device: str) -> dict:
    """Run :func:`load_child` in a new interpreter; add its wall time as seen from here."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(root), "--device", device],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    line = next(l for l in reversed(out.stdout.splitlines()) if l.startswith(RESULT_MARK))
    return {"wall_s": wall, **json.loads(line[len(RESULT_MARK):])}


def bench_load(args, tmp: Path) -> list[dict]:
    """Cold (fresh cache dir, GGUF dequantized) and warm loads vs plain transformers, one process each.

    Kinds run round-robin so drift hits all alike. The GGUF is read once beforehand
    so no row pays for the first disk read of it.
    """
    from workbench.models.gguf import embedded_gguf_path

    embedded_gguf_path().read_bytes()
    kinds = ("imports", "hf-gguf", "wb-cold", "wb-warm", "hf-folder")
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    run_child("imports", tmp, args.device)  # warm the OS cache for the interpreter and libraries
    for i in range(args.repeat):
        root = tmp / f"load-{i}"  # new and empty: the cold load must dequantize
        for kind in kinds:
            runs[kind].append(run_child(kind, root, args.device))
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for k, rs in runs.items()}
    base = med["hf-gguf"]["wall_s"]
    labels = {
        "imports": ("python + imports only", "torch, transformers, workbench; no model"),
        "hf-gguf": ("HF from_pretrained(gguf_file=) [baseline]", "tokenizer + model, dequantized in memory, nothing saved"),
        "wb-cold": ("wb.load_model() cold", "empty cache dir: dequantize, save, reload, hook (+ transformer_lens import)"),
        "wb-warm": ("wb.load_model() warm", f"converted folder; {med['hf-gguf']['wall_s'] / med['wb-warm']['wall_s']:.1f}x faster than baseline"),
        "hf-folder": ("HF from_pretrained(converted folder)", "tokenizer + model, no bridge: the floor for warm"),
    }
    return [row(labels[k][0], med[k]["wall_s"], base, "wall_s", labels[k][1],
                load_s=med[k]["load_s"], import_s=med[k]["import_s"], rss_mb=med[k]["rss_mb"], key=k) for k in kinds]


# ----------------------------------------------------------------- forward
def make_tokens(model):
    """[BATCH, SEQ] ids: BOS + the first SEQ-1 tokens of a few stdlib module docstrings."""
    import importlib

    import torch

    rows = []
    for name in PROMPT_MODULES:
        ids = model.tokenizer(importlib.import_module(name).__doc__, add_special_tokens=False)["input_ids"]
        rows.append([model.tokenizer.bos_token_id, *ids[: SEQ - 1]])
    assert all(len(r) == SEQ for r in rows), "a prompt text is shorter than SEQ tokens"
    return torch.tensor(rows[:BATCH], device=model.device)


def cache_mb(cache: dict) -> tuple[float, float]:
    """MB of a run_with_cache dict: summed over entries, and over distinct storages (aliases once)."""
    total = sum(t.numel() * t.element_size() for t in cache.values())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cache.values()}
    return total / 2**20, sum(storages.values()) / 2**20


def bench_forward(args, tmp: Path) -> list[dict]:
    """Plain HF forward (eager and sdpa) vs our forward and run_with_cache, same tokens, no grad."""
    import torch
    from transformers import AutoModelForCausalLM

    import workbench as wb
    from workbench.models.gguf import dequantized_folder, embedded_gguf_path

    model = wb.load_model(cache_dir=tmp / "shared", device=args.device, progress=False)
    folder = dequantized_folder(embedded_gguf_path(), tmp / "shared")
    hf = {impl: AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl).to(args.device).eval()
          for impl in ("eager", "sdpa")}
    tokens = make_tokens(model)
    resid = [f"blocks.{layer}.hook_resid_post" for layer in range(model.facts.n_layers)]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    cases = {
        "HF forward, eager attention [baseline]": lambda: hf["eager"](tokens).logits,
        "HF forward, sdpa attention": lambda: hf["sdpa"](tokens).logits,
        "wb model(tokens)": lambda: model(tokens),
        "wb run_with_cache, all hooks": lambda: model.run_with_cache(tokens)[1],
        f"wb run_with_cache, {len(resid)} resid_post": lambda: model.run_with_cache(tokens, names=resid)[1],
    }
    with torch.no_grad():
        times = median_times(cases, args.repeat, sync=sync)
        ref = hf["eager"](tokens).logits
        diff = (model(tokens) - ref).abs().max().item()
        all_cache, resid_cache = model.run_with_cache(tokens)[1], model.run_with_cache(tokens, names=resid)[1]
    base = times["HF forward, eager attention [baseline]"]
    impl = getattr(model.hf_model.config, "_attn_implementation", "?")
    notes = [
        "", "",
        f"bridge over HF ({impl} attention); max |logits - HF eager| = {diff:.1e}",
        "{} entries, {:.1f} MB summed, {:.1f} MB distinct storage".format(len(all_cache), *cache_mb(all_cache)),
        "{} entries for {} names, {:.1f} MB summed, {:.1f} MB distinct".format(
            len(resid_cache), len(resid), *cache_mb(resid_cache)),
    ]
    sizes = [None, None, None, cache_mb(all_cache)[0], cache_mb(resid_cache)[0]]
    return [row(name, t * 1e3, base * 1e3, "ms", note, cache_mb=mb)
            for (name, t), note, mb in zip(times.items(), notes, sizes)]


# ------------------------------------------------------------------- cache
def bench_cache(args, tmp: Path) -> list[dict]:
    """model_overview recomputed vs read back from a populated cache folder vs from memory."""
    import workbench as wb

    model = wb.load_model(cache_dir=tmp / "shared", device=args.device, progress=False)
    start = time.perf_counter()
    model.fingerprint()  # hashes every weight once per process; later calls reuse it
    fingerprint_s = time.perf_counter() - start
    root = tmp / "results"
    wb.model_overview(model, cache=wb.ResultCache(root))  # populate the folder
    disk_stats = {"disk_hits": 0, "misses": 0}

    def disk_hit():
        cache = wb.ResultCache(root)  # fresh instance: empty memory layer, so it reads the file
        wb.model_overview(model, cache=cache)
        for k in disk_stats:
            disk_stats[k] += cache.stats[k]

    memory_cache = wb.ResultCache(root)
    times = median_times({
        "recompute": lambda: wb.model_overview(model, cache=False),
        "disk": disk_hit,
        "memory": lambda: wb.model_overview(model, cache=memory_cache),
    }, args.repeat, warmup=1)
    recompute, disk, memory = times["recompute"], times["disk"], times["memory"]
    size_kb = sum(p.stat().st_size for p in root.rglob("*.safetensors")) / 1024
    return [
        row("overview recomputed (cache=False) [baseline]", recompute, recompute, "s", "weight stats + SVD spectra of every matrix"),
        row("overview, disk hit (fresh ResultCache)", disk, recompute, "s",
            f"reads a {size_kb:.0f} KB file; stats {disk_stats}"),
        row("overview, memory hit (same ResultCache)", memory, recompute, "s", f"stats {memory_cache.stats}"),
        row("model.fingerprint(), first call (1 run)", fingerprint_s, recompute, "s",
            "paid once per process by the first cached call"),
    ]


# -------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median reported)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--json", type=Path, help="also write all figures here")
    parser.add_argument("--only", nargs="+", choices=ENTRIES, help="run only these entries")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # before any heavy import: the child times its own imports
        return load_child(*args.child, args.device)
    import torch
    from transformers.utils import logging as hf_logging

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    hf_logging.disable_progress_bar()  # loading bars of the baseline models
    hf_logging.set_verbosity_error()

    start = time.perf_counter()
    facts = machine_facts(args.device)
    print("workbench benchmarks  " + "  ".join(f"{k}={v}" for k, v in facts.items()))
    print(f"repeat={args.repeat} (medians after warm-up), forward tokens [{BATCH}, {SEQ}]")
    if facts["others_busy_cores"] > 0.2:
        print(f"note: other programs keep {facts['others_busy_cores']:.1f} cores busy: timings will be skewed")
    tables = {
        "load": ("load (each in a fresh process)", "HF from_pretrained(gguf_file=)",
                 [("name", "name", ""), ("wall_s", "wall s", ".2f"), ("load_s", "load s", ".2f"),
                  ("ratio", "ratio", ".2f"), ("rss_mb", "peak RSS MB", ".0f")]),
        "forward": ("forward (median, no grad)", "HF eager",
                    [("name", "name", ""), ("ms", "ms", ".1f"), ("ratio", "ratio", ".2f")]),
        "cache": ("result cache: model_overview", "recomputed",
                  [("name", "name", ""), ("s", "seconds", ".4f"), ("ratio", "ratio", ".4f")]),
    }
    bench = {"load": bench_load, "forward": bench_forward, "cache": bench_cache}
    results = {}
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        for name in args.only or ENTRIES:
            t0, (ours0, all0) = time.perf_counter(), cpu_seconds()
            results[name] = bench[name](args, Path(tmp))
            wall, (ours1, all1) = time.perf_counter() - t0, cpu_seconds()
            title, baseline, columns = tables[name]
            ours, others = (ours1 - ours0) / wall, ((all1 - all0) - (ours1 - ours0)) / wall
            busy = f"{wall:.0f} s; cores busy on average: {ours:.1f} ours, {others:.1f} other programs"
            print_table(f"{title}: {busy}", baseline, results[name], columns)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "repeat": args.repeat, "total_s": total,
                                         "entries": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
