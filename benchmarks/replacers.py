"""ReAGent's replacers compared on copy tasks of the embedded model: known answers and seed-to-seed agreement.

    python benchmarks/replacers.py [--replacers uniform pos predictions] [--words 50] [--json out.json]
                                   [--probes 8 --max-steps 500 ...] [--bos | --no-bos]

For each replacer (``replacer=`` of ``wb.reagent``) and each copy task ("The password is W. Remember it well.
The password is" -> W, with W a random single-token word of the model's vocabulary: ``prompts.copy_tasks``),
ReAGent attributes W twice, with seeds ``--seed`` and ``--seed + 1``, at the workbench's defaults unless told
otherwise (8 probes, 500 steps, top-n 5, top-k 3, ratio 0.3; a fixed number of probes). Per replacer:

* ``copy``: in how many tasks the earlier mention of W ranks first (alone: a tie is a miss), for the first
  seed's run, with a Clopper-Pearson 95% interval over the words (``copy_both``: the second seed's run too);
* ``agree_top1``: in how many tasks the two seeds' top-1 positions are the same (Clopper-Pearson 95%), and the
  mean Spearman correlation and top-3 overlap between the two seeds with a bootstrap 95% interval over words;
* ``fallback``: with ``replacer="pos"``, the tasks where some token had no other token of its part-of-speech
  class and was replaced uniformly instead (``meta["replacer_fallback"]``), and which tokens;
* seconds per run.

The words are the same for every replacer (``--copy-seed``). The JSON holds every per-word outcome as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.analyses.attribution.agreement import agreement, ranks_first  # noqa: E402
from workbench.analyses.attribution.prompts import copy_tasks  # noqa: E402


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k / n."""
    from scipy.stats import beta

    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean by resampling the words."""
    if not values:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def proportion(hits: list[bool]) -> dict:
    k, n = sum(hits), len(hits)
    low, high = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci95": [low, high]}


def run_one(model, task, replacer: str, seed: int, params: dict, bos: bool | None) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = wb.reagent(model, prompt=task.prompt, target=task.target, cache=False, seed=seed, replacer=replacer,
                         prepend_bos=bos, adaptive=False, **params)
    seconds = time.perf_counter() - start
    n_prompt = res.meta["n_prompt"]
    offset = n_prompt - len(model.tokenizer(task.prompt, add_special_tokens=False)["input_ids"])  # BOS, if any
    imp = res.importance(0).float()[offset:n_prompt]  # the prompt's own tokens, as task.answer_position counts them
    tokens = res.meta["tokens"]
    return {
        "importance": imp,
        "first": ranks_first(imp, task.answer_position),
        "top": int(imp.nan_to_num(float("-inf")).argmax()),
        "seconds": seconds,
        "stopped": int(res.probe_stopped.sum()),
        "fallback": [tokens[p] for p in res.meta.get("replacer_fallback", [])],
        "warnings": [str(w.message) for w in caught if "replacer" in str(w.message)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replacers", nargs="+", default=["uniform", "pos", "predictions"])
    p.add_argument("--words", type=int, default=50, help="copy tasks (random single-token words)")
    p.add_argument("--copy-seed", type=int, default=0, help="which words")
    p.add_argument("--seed", type=int, default=0, help="ReAGent's seeds: this one and the next")
    p.add_argument("--probes", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--probe-dtype", default="auto", help="auto (default), bfloat16, float16, or none (float32)")
    p.add_argument("--bos", action=argparse.BooleanOptionalAction, default=None,
                   help="prepend BOS (default: the model's own choice)")
    p.add_argument("--model", default=None, help="a model wb.load_model accepts (default: the embedded one)")
    p.add_argument("--json", default=None, help="write every outcome here")
    args = p.parse_args()

    model = wb.load_model(args.model, progress=False) if args.model else wb.load_model(progress=False)
    tasks = copy_tasks(model, args.words, seed=args.copy_seed)
    params = dict(n_probes=args.probes, max_steps=args.max_steps, keep_top_n=args.top_n, stop_top_k=args.top_k,
                  replacing_ratio=args.ratio, probe_dtype=None if args.probe_dtype == "none" else args.probe_dtype)
    out: dict = {"model": model.name, "params": params, "bos": args.bos, "seeds": [args.seed, args.seed + 1],
                 "words": [t.word for t in tasks], "torch_threads": torch.get_num_threads(),
                 "machine": platform.machine(), "replacers": {}}
    for replacer in args.replacers:
        per_word = []
        for t in tasks:
            a = run_one(model, t, replacer, args.seed, params, args.bos)
            b = run_one(model, t, replacer, args.seed + 1, params, args.bos)
            agree = agreement(a["importance"], b["importance"])
            per_word.append({"word": t.word, "first": a["first"], "first_second_seed": b["first"],
                             "same_top1": a["top"] == b["top"], "spearman": agree["spearman"], "top3": agree["top3"],
                             "seconds": a["seconds"] + b["seconds"], "fallback": sorted(set(a["fallback"]) | set(b["fallback"])),
                             "probes_stopped": [a["stopped"], b["stopped"]]})
            print(f"  {replacer:12s} {t.word!r:14s} first={int(a['first'])}/{int(b['first'])} "
                  f"same_top1={int(a['top'] == b['top'])} spearman={agree['spearman']:.2f} "
                  f"{per_word[-1]['seconds']:.1f}s" + (f" fallback={per_word[-1]['fallback']}" if per_word[-1]["fallback"] else ""),
                  flush=True)
        spear = [w["spearman"] for w in per_word]
        top3 = [w["top3"] for w in per_word]
        out["replacers"][replacer] = {
            "copy": proportion([w["first"] for w in per_word]),
            "copy_both": proportion([w["first"] for w in per_word] + [w["first_second_seed"] for w in per_word]),
            "agree_top1": proportion([w["same_top1"] for w in per_word]),
            "spearman": {"mean": sum(spear) / len(spear), "ci95": list(bootstrap_ci(spear))},
            "top3_overlap": {"mean": sum(top3) / len(top3), "ci95": list(bootstrap_ci(top3))},
            "fallback_words": sum(bool(w["fallback"]) for w in per_word),
            "seconds_per_run": sum(w["seconds"] for w in per_word) / (2 * len(per_word)),
            "per_word": per_word,
        }
    print(f"\nCopy tasks on {model.name}: {len(tasks)} words, seeds {args.seed}/{args.seed + 1}, {params}")
    print(f"{'replacer':12s} {'copy first (95% CP)':>26s} {'same top-1 (95% CP)':>26s} {'spearman':>18s} {'s/run':>6s}")
    for name, r in out["replacers"].items():
        c, g, s = r["copy"], r["agree_top1"], r["spearman"]
        print(f"{name:12s} {c['k']:>3d}/{c['n']:<3d} {c['rate']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]   "
              f"{g['k']:>3d}/{g['n']:<3d} {g['rate']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]   "
              f"{s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] {r['seconds_per_run']:6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
