"""Device check: every analysis on a GPU against the CPU, and timings on models of real shapes.

    python benchmarks/device_check.py [--device cuda] [--quick] [--json out.json]

Random-weight Llama-family models of real shapes (no checkpoint needed: the embedded model's GGUF does not
travel to a borrowed GPU machine): SmolLM2-135M (30 layers, 9 / 3 heads, tied embeddings), a 1B
(TinyLlama-1.1B) and a 7B (Llama-2-7B) shape. ``--quick`` uses two tiny shapes instead (the CPU test runs
it, ``--device cpu --quick``, in seconds).

1. Agreement (the small shape): the same seeded float32 weights on the CPU and on the device; every
   analysis runs on both and every tensor of the results is compared: the largest difference relative to
   the tensor's largest value. TF32 is off, so float32 means float32. Then the same on the device in
   bfloat16 against its float32 run (reported, with the looser expectation bfloat16 implies).
2. Times: every analysis on the device for each shape (bfloat16 for the 1B and 7B shapes), seconds.
3. ReAGent against Inseq at Inseq's defaults, on the small shape, when Inseq is importable (carried as
   wheels into ``.bench-deps``, see benchmarks/README.md); otherwise the line says it was skipped.

Runs with torch 2.11 + transformers 5.17 (the GPU machine's) and this project's pins alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
BENCH_DEPS = Path(__file__).resolve().parent.parent / ".bench-deps"  # carried wheels (Inseq), if any
if BENCH_DEPS.is_dir():
    sys.path.append(str(BENCH_DEPS))
INSEQ_CACHE = Path(tempfile.mkdtemp(prefix="inseq-artifacts-"))
os.environ["INSEQ_ARTIFACTS_CACHE"] = str(INSEQ_CACHE)  # read by Inseq at import: its POS-tag cache, pre-seeded below

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.models.loading import from_hf  # noqa: E402
from workbench.models.tiny import byte_tokenizer  # noqa: E402

SHAPES = {  # name -> (layers, d_model, heads, kv heads, d_mlp, vocab, tied embeddings)
    "SmolLM2-135M": (30, 576, 9, 3, 1536, 49152, True),
    "TinyLlama-1.1B": (22, 2048, 32, 4, 5632, 32000, False),
    "Llama-2-7B": (32, 4096, 32, 32, 11008, 32000, False),
}
QUICK = {"tiny": (2, 64, 4, 2, 128, 259, True), "tiny-wide": (3, 128, 4, 4, 256, 259, False)}
PROMPT = "The cat sat on the mat. The cat"
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}  # largest difference / largest value, per result tensor


def build(shape: tuple, device: str, dtype: torch.dtype, tokenizer, name: str, seed: int = 0) -> wb.HookedModel:
    """A seeded random-weight Llama model of ``shape`` initialised on ``device``, hooked."""
    return from_hf(hf_model(shape, device, dtype, seed), tokenizer, name)


def hf_model(shape: tuple, device: str, dtype: torch.dtype, seed: int = 0):
    """The plain HF model (initialised on the CPU, the same seed gives the same weights there)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    layers, d, heads, kv, mlp, vocab, tied = shape
    config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                         tie_word_embeddings=tied, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def analyses(model) -> dict:
    """Every analysis of the report, with settings small enough for a 7B model in seconds on a GPU."""
    return {
        "overview": lambda: wb.model_overview(model, cache=False),
        "head composition": lambda: wb.head_composition(model, cache=False),
        "head effects": lambda: wb.head_effects(model, prompts=(PROMPT,), n_writers=2, cache=False),
        "super weights": lambda: wb.super_weights(model, eval_windows=2, window=32, cache=False),
        "super-weight trace": lambda: wb.trace_super_weight(model, weight=(1, 3, 5), prompt=PROMPT, cache=False),
        "bilinear replacement": lambda: wb.bilinear_replacement(model, layer=0, cache=False),
        "ReAGent": lambda: wb.reagent(model, prompt=PROMPT, max_steps=10, cache=False),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_runs(model, device: str) -> tuple[dict, dict]:
    """(results, seconds) of every analysis; a failure is kept as its one-line message."""
    results, seconds = {}, {}
    for name, run in analyses(model).items():
        sync(device)
        start = time.perf_counter()
        try:
            results[name] = run()
        except Exception as exc:  # reported, the check goes on
            results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        sync(device)
        seconds[name] = time.perf_counter() - start
    return results, seconds


def disagreement(a, b) -> float:
    """Largest |a - b| / largest |a| over the float tensors of two results (inf: one failed or shapes differ)."""
    if isinstance(a, str) or isinstance(b, str) or a.tensors.keys() != b.tensors.keys():
        return math.inf
    worst = 0.0
    for key, x in a.tensors.items():
        y = b.tensors[key]
        if x.shape != y.shape:
            return math.inf
        if not x.is_floating_point():
            worst = max(worst, float((x != y).any()))
            continue
        x, y = x.double().cpu(), y.double().cpu()
        finite = torch.isfinite(x) & torch.isfinite(y)
        scale = x[finite].abs().max().item() if finite.any() else 1.0
        if finite.any():
            worst = max(worst, (x[finite] - y[finite]).abs().max().item() / max(scale, 1e-30))
    return worst


def agreement(shape: tuple, device: str, tokenizer) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    same = lambda: hf_model(shape, "cpu", torch.float32)  # noqa: E731  the same seeded weights each time
    ref, t_cpu = timed_runs(from_hf(same(), tokenizer, "small"), "cpu")
    got, t_dev = timed_runs(from_hf(same().to(device), tokenizer, "small"), device)
    got16, t16 = timed_runs(from_hf(same().to(device, torch.bfloat16), tokenizer, "small"), device)
    rows = []
    for name in ref:
        d32, d16 = disagreement(ref[name], got[name]), disagreement(got[name], got16[name])
        rows.append({"analysis": name, "cpu_s": t_cpu[name], "device_s": t_dev[name], "float32_vs_cpu": d32,
                     "float32_ok": d32 <= TOLERANCE["float32"], "bfloat16_s": t16[name], "bfloat16_vs_float32": d16,
                     "bfloat16_ok": d16 <= TOLERANCE["bfloat16"],
                     "error": next((r for r in (ref[name], got[name], got16[name]) if isinstance(r, str)), "")})
    return rows


def reagent_vs_inseq(shape: tuple, device: str, tokenizer) -> dict:
    """ReAGent at Inseq 0.7.1's defaults (its ReAGent constructor's), ours and Inseq's, on the same weights."""
    try:
        import inseq
    except ImportError:
        return {"skipped": "Inseq is not importable (carry its wheels into .bench-deps: benchmarks/README.md)"}
    model = build(shape, device, torch.float32, tokenizer, "small")
    fresh = hf_model(shape, device, torch.float32)  # the same weights, unpatched by the bridge, for Inseq
    fresh.config.name_or_path = "device-check-small"
    folder = INSEQ_CACHE / "pos_tag_sampler_cache"
    folder.mkdir(exist_ok=True)
    with open(folder / "device-check-small.pkl", "wb") as f:  # one tag over the byte tokens: a uniform sampler,
        pickle.dump({"ANY": list(range(256))}, f)  # as our replacer="uniform"; no NLTK, no network
    try:
        im = inseq.load_model(fresh, "reagent", tokenizer=model.tokenizer)
        start = time.perf_counter()
        im.attribute(PROMPT, generation_args={"max_new_tokens": 1, "do_sample": False}, show_progress=False)
        t_inseq = time.perf_counter() - start
    except Exception as exc:  # reported, not fatal: the rest of the check stands
        return {"failed": f"Inseq: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    start = time.perf_counter()
    wb.reagent(model, prompt=PROMPT, max_new_tokens=1, prepend_bos=False, n_probes=16, max_steps=100, keep_top_n=5,
               stop_top_k=3, replacing_ratio=0.3, cache=False)
    return {"inseq_s": t_inseq, "ours_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="two tiny shapes (seconds; what the test runs)")
    parser.add_argument("--no-inseq", action="store_true", help="skip the Inseq comparison (a minute on a CPU)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shapes = QUICK if args.quick else SHAPES
    small = next(iter(shapes.values()))
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "none"
    print(f"torch {torch.__version__}, device {args.device} ({gpu})")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = byte_tokenizer(Path(tmp))
        rows = agreement(small, args.device, tokenizer)
        print(f"\nAgreement on {next(iter(shapes))} (relative to each tensor's largest value; float32 tolerance "
              f"{TOLERANCE['float32']:g}, bfloat16 {TOLERANCE['bfloat16']:g}):")
        print("| analysis | CPU s | device s | float32 vs CPU | ok | bfloat16 s | bfloat16 vs float32 | ok | error |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['analysis']} | {r['cpu_s']:.2f} | {r['device_s']:.2f} | {r['float32_vs_cpu']:.1e} | "
                  f"{r['float32_ok']} | {r['bfloat16_s']:.2f} | {r['bfloat16_vs_float32']:.1e} | {r['bfloat16_ok']} | "
                  f"{r['error']} |")
        times = {}
        for name, shape in shapes.items():
            dtype = torch.float32 if shape is small else torch.bfloat16
            start = time.perf_counter()
            model = build(shape, args.device, dtype, tokenizer, name)
            build_s = time.perf_counter() - start
            results, seconds = timed_runs(model, args.device)
            times[name] = {"dtype": str(dtype).removeprefix("torch."), "params": model.info.n_params, "build_s": build_s,
                           **seconds, "errors": {k: v for k, v in results.items() if isinstance(v, str)}}
            del model, results
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        print("\nSeconds per analysis on the device:")
        names = list(analyses(None))
        print("| shape | dtype | params | build | " + " | ".join(names) + " |")
        print("|---|---|---|---|" + "---|" * len(names))
        for name, t in times.items():
            print(f"| {name} | {t['dtype']} | {t['params'] / 1e6:.0f}M | {t['build_s']:.1f} | "
                  + " | ".join(f"{t[n]:.2f}" for n in names) + " |")
            for analysis, error in t["errors"].items():
                print(f"  {name} / {analysis}: {error}")
        inseq = {"skipped": "--no-inseq"} if args.no_inseq else reagent_vs_inseq(small, args.device, tokenizer)
        print("\nReAGent vs Inseq (Inseq's defaults):", json.dumps(inseq))
    if args.json:
        Path(args.json).write_text(json.dumps({"agreement": rows, "times": times, "inseq": inseq}, indent=1, default=str))
    failed = [r["analysis"] for r in rows if not r["float32_ok"]]
    print("\nfloat32 agreement:", "all within tolerance" if not failed else f"OUT OF TOLERANCE: {failed}")


if __name__ == "__main__":
    main()
