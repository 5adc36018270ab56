"""ReAGent's replacers compared on copy tasks of the embedded model: known answers and seed-to-seed agreement.

    python benchmarks/replacers.py [--replacers uniform pos predictions] [--words 50] [--copy-seed 1]
                                   [--results outcomes.jsonl [--shard 0/2]] [--json summary.json]
                                   [--probes 8 --max-steps 500 ...] [--bos | --no-bos]

For each replacer (``replacer=`` of ``wb.reagent``) and each copy task ("The password is W. Remember it well.
The password is" -> W, with W a random single-token word of the model's vocabulary: ``prompts.copy_tasks``),
ReAGent attributes W twice, with seeds ``--seed`` and ``--seed + 1``, at the workbench's defaults unless told
otherwise (8 probes, 500 steps, top-n 5, top-k 3, ratio 0.3, the "mu" reading with its top-up batches, not
adaptive). Per replacer:

* ``copy``: in how many tasks the earlier mention of W ranks first (alone: a tie is a miss), for the first
  seed's run, with a Clopper-Pearson 95% interval over the words (``copy_both``: the second seed's run too);
* ``agree_top1``: in how many tasks the two seeds' top-1 positions are the same (Clopper-Pearson 95%), and the
  mean Spearman correlation and top-3 overlap between the two seeds with a bootstrap 95% interval over words;
* ``fallback``: with ``replacer="pos"``, the tasks where some token had no other token of its part-of-speech
  class and was replaced uniformly instead (``meta["replacer_fallback"]``), and which tokens;
* seconds per run;
* ``paired_copy``: each pair of replacers on the same words, an exact McNemar test of their copy outcomes.

Beside them, ``copy_by_chance``: the copy rate of random importance (one over the prompt's length), the negative
control.

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
from itertools import combinations
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.analyses.attribution.agreement import agreement, ranks_first  # noqa: E402
from workbench.analyses.attribution.prompts import copy_tasks  # noqa: E402
from workbench.analyses.attribution.reagent import ReagentParams, probe_dtype  # noqa: E402


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


def paired(a: list[bool], b: list[bool]) -> dict:
    """Exact McNemar test on the same words: the words only ``a`` got right, only ``b`` did, and the two-sided p
    of so uneven a split of those discordant words if the replacers did equally well."""
    from scipy.stats import binomtest

    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_first": only_a, "only_second": only_b, "p": float(p)}


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


def word_outcome(model, task, replacer: str, seed: int, params: dict, bos: bool | None) -> dict:
    """One word, one replacer: both seeds' runs and how they agree (a line of the results file)."""
    a = run_one(model, task, replacer, seed, params, bos)
    b = run_one(model, task, replacer, seed + 1, params, bos)
    agree = agreement(a["importance"], b["importance"])
    return {"replacer": replacer, "word": task.word, "first": a["first"], "first_second_seed": b["first"],
            "same_top1": a["top"] == b["top"], "spearman": agree["spearman"], "top3": agree["top3"],
            "seconds": a["seconds"] + b["seconds"], "fallback": sorted(set(a["fallback"]) | set(b["fallback"])),
            "probes_stopped": [a["stopped"], b["stopped"]],
            "importance": [a["importance"].tolist(), b["importance"].tolist()]}


def summarize(per_word: list[dict]) -> dict:
    spear = [w["spearman"] for w in per_word]
    top3 = [w["top3"] for w in per_word]
    return {
        "copy": proportion([w["first"] for w in per_word]),
        "copy_both": proportion([w["first"] for w in per_word] + [w["first_second_seed"] for w in per_word]),
        "agree_top1": proportion([w["same_top1"] for w in per_word]),
        "spearman": {"mean": sum(spear) / len(spear), "ci95": list(bootstrap_ci(spear))},
        "top3_overlap": {"mean": sum(top3) / len(top3), "ci95": list(bootstrap_ci(top3))},
        "fallback_words": sum(bool(w["fallback"]) for w in per_word),
        "seconds_per_run": sum(w["seconds"] for w in per_word) / (2 * len(per_word)),
        "per_word": per_word,
    }


def read_lines(path: Path, setting: dict) -> list[dict]:
    """The outcomes already in ``path`` (a line each), refusing a file written under other settings."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for line in lines:
        if line["setting"] != setting:
            raise SystemExit(f"{path} holds outcomes of other settings ({line['setting']}); name another file")
    return lines


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
    p.add_argument("--results", default=None,
                   help="a JSON-lines file: each (word, replacer) outcome is appended as it is done, and a rerun "
                        "skips the outcomes already there (resume, or run shards in parallel processes)")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes the words whose index is i mod n")
    p.add_argument("--summary-only", action="store_true", help="run nothing: summarize --results")
    p.add_argument("--json", default=None, help="write the summary and every outcome here")
    args = p.parse_args()

    model = wb.load_model(args.model, progress=False) if args.model else wb.load_model(progress=False)
    tasks = copy_tasks(model, args.words, seed=args.copy_seed)
    params = dict(n_probes=args.probes, max_steps=args.max_steps, keep_top_n=args.top_n, stop_top_k=args.top_k,
                  replacing_ratio=args.ratio, probe_dtype=None if args.probe_dtype == "none" else args.probe_dtype)
    # "auto" resolved on this machine: outcomes of bfloat16 probes (a GPU, an AMX CPU) never mix with float32 ones
    params["probe_dtype"] = probe_dtype(model, ReagentParams(probe_dtype=params["probe_dtype"]))
    setting = {"model": model.name, "params": params, "bos": args.bos, "seeds": [args.seed, args.seed + 1],
               "copy_seed": args.copy_seed}
    results = Path(args.results) if args.results else None
    lines = read_lines(results, setting) if results else []
    done = {(line["word"], line["replacer"]) for line in lines}
    shard, n_shards = (int(x) for x in args.shard.split("/"))
    # word by word, every replacer in turn: whatever prefix of the words is done compares the replacers fairly
    for t in ([] if args.summary_only else tasks[shard::n_shards]):
        for replacer in args.replacers:
            if (t.word, replacer) in done:
                continue
            line = {"setting": setting, **word_outcome(model, t, replacer, args.seed, params, args.bos)}
            lines.append(line)
            if results:
                with results.open("a") as f:
                    f.write(json.dumps(line) + "\n")
            print(f"  {replacer:12s} {t.word!r:14s} first={int(line['first'])}/{int(line['first_second_seed'])} "
                  f"same_top1={int(line['same_top1'])} spearman={line['spearman']:.2f} {line['seconds']:.1f}s"
                  + (f" fallback={line['fallback']}" if line["fallback"] else ""), flush=True)

    # only words every replacer has done count, in the order of the word list
    by_key = {(line["word"], line["replacer"]): line for line in lines}
    words = [t.word for t in tasks if all((t.word, r) in by_key for r in args.replacers)]
    out: dict = {**setting, "words": words, "torch_threads": torch.get_num_threads(),
                 "machine": platform.machine(), "replacers": {}}
    if not words:
        print("no word is done by every replacer yet")
        return
    for replacer in args.replacers:
        per_word = [{k: v for k, v in by_key[w, replacer].items() if k != "setting"} for w in words]
        out["replacers"][replacer] = summarize(per_word)
    print(f"\nCopy tasks on {model.name}: {len(words)} of {len(tasks)} words done, seeds {args.seed}/{args.seed + 1}, "
          f"{params}")
    print(f"{'replacer':12s} {'copy first (95% CP)':>26s} {'both seeds (95% CP)':>26s} {'same top-1 (95% CP)':>26s} "
          f"{'spearman':>18s} {'s/run':>6s}")
    for name, r in out["replacers"].items():
        c, cb, g, s = r["copy"], r["copy_both"], r["agree_top1"], r["spearman"]
        print(f"{name:12s} " + "   ".join(f"{x['k']:>3d}/{x['n']:<3d} {x['rate']:.2f} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}]"
                                           for x in (c, cb, g))
              + f"   {s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] {r['seconds_per_run']:6.1f}")
    # the negative control, one figure for the word list: random importance ranks W first once in n_prompt tokens
    out["copy_by_chance"] = sum(1 / len(by_key[w, args.replacers[0]]["importance"][0]) for w in words) / len(words)
    print(f"random importance would rank the word first in {out['copy_by_chance']:.2f} of the tasks")
    firsts = {r: [w["first"] for w in out["replacers"][r]["per_word"]] for r in args.replacers}
    out["paired_copy"] = {f"{a} vs {b}": paired(firsts[a], firsts[b]) for a, b in combinations(args.replacers, 2)}
    for pair, t in out["paired_copy"].items():
        print(f"copy, {pair}: right only with the first {t['only_first']}, only with the second {t['only_second']}, "
              f"exact McNemar p = {t['p']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
