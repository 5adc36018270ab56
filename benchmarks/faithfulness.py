"""Does a faithfulness metric tell a perfect attribution from a random one? Soft-NS / Soft-NC vs the
retention-controlled pi-Soft-NS / pi-Soft-NC, on the embedded model; then the ranking of the baselines.

    python benchmarks/faithfulness.py [--quick] [--tasks 10] [--no-ranking] [--json out.json]

"Perfect" is defined without any attribution method: on a copy task ("The password is W. Remember it
well. The password is" -> W, ``prompts.copy_tasks``) the earlier mention of W is the only context token
that carries W's identity, so the one-hot on it is the planted perfect attribution; "wrong" is uniform
over every other token. Per metric: mean of perfect / wrong / random (softmax of U(0, 1), the authors'
random baseline), the paper's log(sum perfect / sum random), and the fraction of targets where perfect
beats random. The ranking part scores every baseline on copy tasks and on mixed prompts (one
generated token each) and sorts them by each metric's log ratio vs random. No BOS (as Inseq feeds
SmolLM2); ``--bos`` for the model's default. CPU, one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import pandas as pd
import torch

import workbench as wb
from workbench.analyses.attribution import baselines
from workbench.analyses.attribution.common import prepare
from workbench.analyses.attribution.faithfulness import SOFT_METRICS, FaithfulnessParams, faithfulness, summarise
from workbench.analyses.attribution.prompts import MIXED_PROMPTS, copy_tasks


def planted(seq, answer: int) -> dict[str, torch.Tensor]:
    """One-hot on the earlier mention of the word, and its complement (uniform over the other tokens)."""
    W = len(seq.ids) - 1
    perfect = torch.zeros(1, W)
    perfect[0, answer] = 1.0
    wrong = seq.attributable[:W].float().cpu()[None].clone()
    wrong[0, answer] = 0.0
    return {"perfect": perfect, "wrong": wrong}


def separation(model, n_tasks: int, bos, params: FaithfulnessParams) -> pd.DataFrame:
    tables = []
    for i, task in enumerate(copy_tasks(model, n=n_tasks, seed=1)):  # seed 1: not the words of the copy-rate check
        seq = prepare(model, task.prompt, task.target, prepend_bos=bos)
        shift = seq.n_prompt - len(model.to_tokens(task.prompt, prepend_bos=False)[0])  # BOS, if any
        table = faithfulness(model, seq, planted(seq, task.answer_position + shift), params)
        table["task"] = i
        tables.append(table)
    long = pd.concat(tables, ignore_index=True)
    rows = []
    for metric in [*SOFT_METRICS, *sorted(m for m in set(long["metric"]) if "@" in m and m.startswith("pi_"))]:
        v = long[long["metric"] == metric].pivot_table(index="task", columns="method", values="value")
        log_ratio = math.log(v["perfect"].sum() / v["random"].sum()) if v["random"].sum() > 0 else float("inf")
        rows.append({"metric": metric, "perfect": v["perfect"].mean(), "wrong": v["wrong"].mean(),
                     "random": v["random"].mean(), "perfect_minus_random": (v["perfect"] - v["random"]).mean(),
                     "log_ratio_perfect": log_ratio, "perfect_wins": float((v["perfect"] > v["random"]).mean()),
                     "wrong_below_random": float((v["wrong"] < v["random"]).mean())})
    return pd.DataFrame(rows)


def ranking(model, n_tasks: int, n_prompts: int, bos) -> pd.DataFrame:
    """Every baseline scored on copy tasks and mixed prompts: log ratio vs random per soft metric."""
    tables = []
    cases = [(t.prompt, t.target) for t in copy_tasks(model, n=n_tasks, seed=2)]
    cases += [(p, None) for p in MIXED_PROMPTS[:n_prompts]]
    for prompt, target in cases:
        seq = prepare(model, prompt, target, max_new_tokens=1, prepend_bos=bos)
        imps = {m: baselines.baseline_importance(model, seq, m) for m in baselines.BASELINES}
        tables.append(faithfulness(model, seq, imps))
    s = summarise(pd.concat(tables, ignore_index=True))
    s = s[s["metric"].isin(SOFT_METRICS) & (s["method"] != "random")]
    return s.pivot(index="method", columns="metric", values="log_ratio").sort_values("pi_soft_nc", ascending=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 tasks, ranking on 2 copy tasks + 2 prompts")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--prompts", type=int, default=4, help="mixed prompts in the ranking")
    p.add_argument("--bos", action="store_true", help="the model's default BOS (else none)")
    p.add_argument("--no-ranking", action="store_true")
    p.add_argument("--retention", type=float, nargs="+", default=list(FaithfulnessParams().retention))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.tasks, args.prompts = 4, 2
    bos = None if args.bos else False
    model = wb.load_model(progress=False)
    pd.set_option("display.width", 200)
    sep = separation(model, args.tasks, bos, FaithfulnessParams(retention=tuple(args.retention)))
    print(f"== planted perfect (one-hot on the earlier mention) vs random, {args.tasks} copy tasks, prepend_bos={bos}")
    print(sep.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    out = {"separation": sep.to_dict("records")}
    if not args.no_ranking:
        rank = ranking(model, max(2, args.tasks // 2), args.prompts, bos)
        print(f"\n== baselines ranked by pi-Soft-NC (log ratio vs random; copy tasks + {args.prompts} mixed prompts)")
        print(rank.to_string(float_format=lambda x: f"{x:+.2f}"))
        out["ranking"] = rank.reset_index().to_dict("records")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
