"""ReAGent held against itself and against its estimand, on prompts the tests never use.

    python benchmarks/reagent_trust.py stability [--options JSON] [--prompts N] [--json out.json]
    python benchmarks/reagent_trust.py mu [--prompts N] [--json out.json]

* ``stability``: two runs with different seeds (0 and 1) of ``wb.reagent`` at the given options (default: the
  library's defaults) on held-out prompts (STABILITY_PROMPTS); per prompt the Spearman correlation of the two
  importance vectors, whether they pick the same top-1 token (or both mark it tied, each run's top token in the
  other's tied-first set), the probes and probe steps used. "before" is the softmax reading of each run's first
  batch of probes, which is exactly the former default run (same draws), so one run gives both; cost = probe
  steps (each one update and one check row), a measure the machine's load does not move.
* ``mu``: ReAGent against the exact estimand mu_i = E[g(Delta) | i replaced] (``estimand.py``) on held-out prompts
  of at most 12 tokens, with a fixed set of K replacement tokens per position (the replacer both use); per prompt
  Spearman(ReAGent, mu), whether ReAGent's top-1 lies in mu's tied top set, and leave-one-out / Banzhaf / Shapley
  beside it.

Run it under the timing lock (``flock /tmp/wb-timing.lock python benchmarks/reagent_trust.py ...``); the load
average is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import torch

import workbench as wb
from workbench.analyses.attribution.agreement import spearman

# held out: used by no test, no default, no choice of a parameter
STABILITY_PROMPTS = (  # shortest first: on a busy machine the first ones finish
    "My sister plays the violin and my brother plays the",
    "He put the milk back in the fridge and closed the",
    "Every morning she drinks a cup of coffee and reads the",
    "After the long winter, the farmers planted corn and wheat in the fields near the",
    "The train from London to Edinburgh was delayed by two hours because of the",
    "The children built a snowman in the garden and gave it a carrot for a",
    "The museum in the old town was closed on Monday, so the tourists walked to the river and took a boat to the",
)


# held out for the estimand, used by no test: 6-11 tokens, so that the default stopping check (keep the top 5)
# replaces something (2^n enumerations with K = 1)
MU_PROMPTS = (
    "The little girl put her doll in the toy", "After dinner we washed the dishes and dried the",
    "The fisherman caught a big fish in the", "My grandmother knits warm socks and a woolly",
    "The students handed their homework to the", "He climbed the tall ladder to paint the",
    "The waiter brought us two cups of hot", "She planted roses and tulips in her",
    "The firefighters rushed to put out the", "We packed our bags and drove to the",
    "The hungry lion chased the zebra across the", "In the morning the birds sing in the",
    "The shop on the corner sells fresh", "He wore a heavy coat because it was",
    "The library closes at six on", "Our neighbours have a big black", "The artist painted a picture of the",
    "I need a hammer and some", "The children waited for the school", "She sent her friend a birthday",
    "The dog chased the", "She poured milk into the",
)


def load_avg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _top(x: torch.Tensor) -> int:
    return int(torch.nan_to_num(x, nan=-1.0).argmax())


def _raw(result, seconds: float) -> dict:
    """What one run's views are computed from: every probe's numbers (importance, drift, steps, stopped) and the
    run's own tied-first set, as plain lists (a run can be saved and the views taken later)."""
    n = int(result.probe_count[0])
    return {"tokens": len(result.tokens) - 1, "target": result.targets["target"][0], "seconds": seconds,
            "importance": result.importance(0).float().tolist(), "tied": result.tied_first(0),
            "probe_importance": result.probe_importance[0, :n].tolist(),
            "probe_drift": result.tensors["probe_drift"][0, :n].tolist(),
            "probe_steps": result.probe_steps[0, :n].tolist(), "probe_stopped": result.probe_stopped[0, :n].tolist()}


def drift_reading(drift: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
    """Each probe's drift [probe, pos] minus its lowest attributable value (NaN where not attributed): a per-probe
    constant, so the mean's order, the paired differences behind the tied set and hence the ties are the drift's,
    and the values are >= 0. The per-probe values of a "drift" reading of the probes."""
    d = drift.double().masked_fill(~attr, float("inf"))
    return (d - d.amin(-1, keepdim=True)).masked_fill(~attr, float("nan")).float()


def views(run: dict, batch: int, seed: int) -> dict[str, dict]:
    """One run seen two ways: ``before`` = the softmax reading of its first ``batch`` probes, exactly the former
    default run (same draws: the first batch is probes 0..batch-1 of the same key; tied set from those probes
    alone), ``after`` = the run's own importance and tied set (the options' reading, over every probe it used)."""
    from workbench.analyses.attribution.reagent import draw_key
    from workbench.analyses.attribution.uncertainty import probe_uncertainty

    imp = torch.tensor(run["probe_importance"])
    steps, stopped = torch.tensor(run["probe_steps"]), torch.tensor(run["probe_stopped"])
    attr = torch.tensor(run["probe_drift"]).isfinite().all(0)  # NaN where nothing is attributed (BOS)
    first = imp[:batch][stopped[:batch]] if stopped[:batch].any() else imp[:batch]
    unc = probe_uncertainty(first.masked_fill(~attr, float("nan")), seed=draw_key(seed, 0))
    return {
        "before": {"importance": unc["mean"], "tied": set(unc["tied_first"].nonzero()[:, 0].tolist()),
                   "steps": int(steps[:batch].sum()), "probes": batch},
        "after": {"importance": torch.tensor(run["importance"]), "tied": set(run["tied"]), "steps": int(steps.sum()),
                  "probes": len(steps)},
    }


KINDS = ("before", "after")


def compare(runs: list[dict], batch: int) -> dict:
    """Seed 0 against seed 1 for every view: Spearman, same top-1 (or both tied), cost in probe steps."""
    v = [views(r, batch, seed) for seed, r in enumerate(runs)]
    row = {}
    for kind in KINDS:
        a, b = v[0][kind], v[1][kind]
        ta, tb = _top(a["importance"]), _top(b["importance"])
        both_tied = len(a["tied"]) > 1 and len(b["tied"]) > 1 and ta in b["tied"] and tb in a["tied"]
        row[kind] = {"spearman": spearman(a["importance"], b["importance"]), "same_top1": ta == tb,
                     "same_or_both_tied": ta == tb or both_tied, "tied_sizes": [len(a["tied"]), len(b["tied"])],
                     "probes": [a["probes"], b["probes"]], "steps": [a["steps"], b["steps"]]}
    return row


def stability(model, prompts, options: dict, json_path: str | None = None, *, resume: bool = False,
              budget: float = float("inf")) -> dict:
    """Two seeds of the given options on each prompt, each seed's run saved as it ends (``--resume`` goes on from
    the next run); before (the former default) / after (the options' run) views, compared across the seeds."""
    batch = options.get("n_probes", 8)
    saved = json.loads(Path(json_path).read_text()) if resume and json_path and Path(json_path).exists() else {}
    runs: dict[str, list[dict]] = saved.get("runs", {})
    began = time.perf_counter()
    for prompt in prompts:
        for seed in (0, 1):
            if len(runs.get(prompt, [])) > seed:
                continue
            if time.perf_counter() - began > budget:  # a chunk ends between runs; --resume goes on from here
                break
            load, start = load_avg(), time.perf_counter()
            result = wb.reagent(model, prompt=prompt, seed=seed, cache=False, **options)
            runs.setdefault(prompt, []).append({**_raw(result, time.perf_counter() - start), "load": load})
            print(f"  {prompt[:50]!r} seed {seed} -> {result.targets['target'][0]!r}: "
                  f"{runs[prompt][-1]['seconds']:.0f} s, {int(result.probe_count[0])} probes, load {load}", flush=True)
            if json_path:  # after every run: a chunk cut short keeps what it measured
                Path(json_path).write_text(json.dumps({"options": options, "runs": runs}, default=str) + "\n")
    rows = []
    for prompt in prompts:
        pair = runs.get(prompt, [])
        if len(pair) < 2:
            continue
        row = {"prompt": prompt, "tokens": pair[0]["tokens"], "target": pair[0]["target"],
               "seconds": [r["seconds"] for r in pair], "load": [r["load"] for r in pair], **compare(pair, batch)}
        rows.append(row)
        print(f"  {prompt[:50]!r} -> {row['target']!r} ({row['tokens']} tokens)")
        for kind in KINDS:
            x = row[kind]
            print(f"    {kind:13s} rho {x['spearman']:+.2f}  same top-1 {x['same_top1']!s:5s}  same or both tied "
                  f"{x['same_or_both_tied']!s:5s}  tied {x['tied_sizes']}  probes {x['probes']}  steps {x['steps']}",
                  flush=True)
    if not rows:
        return {"options": options, "runs": runs, "rows": []}
    summary = {"prompts": len(rows), "median_seconds": statistics.median(t for r in rows for t in r["seconds"])}
    for kind in KINDS:
        cost = [r[kind]["steps"][i] / r["before"]["steps"][i] for r in rows for i in (0, 1)]
        summary[kind] = {"median_spearman": statistics.median(r[kind]["spearman"] for r in rows),
                         "same_top1": sum(r[kind]["same_top1"] for r in rows),
                         "same_or_both_tied": sum(r[kind]["same_or_both_tied"] for r in rows),
                         "median_cost_vs_before": statistics.median(cost)}
    print(f"== {json.dumps(summary)}")
    return {"options": options, "runs": runs, "rows": rows, "summary": summary}


def _resumed(json_path: str | None) -> list[dict]:
    """The rows a previous (partial) run wrote to ``json_path``, to go on from; none when there is no file."""
    if not json_path or not Path(json_path).exists():
        return []
    return json.loads(Path(json_path).read_text())["rows"]


def mu_section(model, n_prompts: int, k: int = 1, json_path: str | None = None, *, start: int = 0,
               resume: bool = False, budget: float = float("inf")) -> dict:
    """ReAGent (library defaults, adaptive; replacements from a fixed set of K tokens per position) against the
    exact mu on the same replacement distribution, with leave-one-out / Banzhaf / Shapley beside it."""
    from workbench.analyses.attribution.common import prepare
    from workbench.analyses.attribution.estimand import exact_estimand, fixed_sampler, tied_top
    from workbench.analyses.attribution.reagent import ReagentParams, draw_key, reagent_probes
    from workbench.analyses.attribution.uncertainty import probe_uncertainty
    from workbench.analyses.attribution.replacers import candidate_ids

    params = ReagentParams(probe_dtype=None)
    candidates = candidate_ids(model)
    rows = _resumed(json_path) if resume else []
    done, began = {r["prompt"] for r in rows}, time.perf_counter()
    for i, prompt in enumerate(MU_PROMPTS[: start + n_prompts]):
        if i < start or prompt in done:
            continue
        if time.perf_counter() - began > budget:  # a chunk ends between prompts; --resume goes on from here
            print(f"  budget: {time.perf_counter() - began:.0f} s spent, {budget:.0f} s allowed; --resume goes on",
                  flush=True)
            break
        seq = prepare(model, prompt, None, max_new_tokens=1)
        T = seq.n_prompt
        ctx, attr, target = seq.context(0).cpu(), seq.attributable[:T].cpu(), seq.target_id(0)
        gen = torch.Generator().manual_seed(1000 + i)
        reps = candidates[torch.randint(len(candidates), (T, k), generator=gen)]
        t0 = time.perf_counter()
        exact = exact_estimand(model, ctx, target, attr, reps, params.replacing_ratio)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = reagent_probes(model, ctx, target, attr, fixed_sampler(reps), params, draw_key(0, 0))
        t_run = time.perf_counter() - t0
        mu = exact["mu"].float()
        imp = run["mean"].masked_fill(~attr, float("nan"))
        drift = run["drift"].mean(0).masked_fill(~attr, float("nan"))
        top_set = tied_top(mu)
        top = int(torch.nan_to_num(imp, nan=-1).argmax())
        by_drift = probe_uncertainty(drift_reading(run["drift"], attr), seed=draw_key(0, 0))
        top_drift = int(torch.nan_to_num(by_drift["mean"], nan=-1).argmax())
        row = {"prompt": prompt, "index": i, "target": model.to_str_tokens([target])[0], "positions": int(attr.sum()),
               "spearman_reagent_mu": spearman(imp, mu), "spearman_drift_mu": spearman(drift, mu),
               "top1_in_mu_top": top in top_set, "mu_top_set": top_set, "reagent_top1": top,
               "reagent_tied_first": run["tied_first"].nonzero()[:, 0].tolist(),
               "drift_top1_in_mu_top": top_drift in top_set, "drift_top1": top_drift,
               "drift_tied_first": by_drift["tied_first"].nonzero()[:, 0].tolist(),
               **{f"spearman_{m}_mu": spearman(exact[m].float(), mu) for m in ("leave_one_out", "banzhaf", "shapley")},
               "probes": len(run["steps"]), "probe_steps": int(run["steps"].sum()), "forwards_exact": int(exact["forwards"]),
               "seconds_exact": t_exact, "seconds_reagent": t_run, "load": load_avg(),
               "mu": mu.tolist(), "reagent": imp.tolist(), "drift": drift.tolist(),
               # every probe's own numbers, so that other readings of the same passes can be scored afterwards
               "probe_drift": run["drift"].tolist(), "probe_importance": run["probe_importance"].tolist(),
               "probe_steps": run["steps"].tolist(), "probe_stopped": run["stopped"].tolist(),
               "attributable": attr.tolist()}
        rows.append(row)
        print(f"  {prompt!r} -> {row['target']!r}: n {row['positions']}, rho(ReAGent, mu) {row['spearman_reagent_mu']:+.2f}, "
              f"rho(drift, mu) {row['spearman_drift_mu']:+.2f}, top-1 in mu's top set {row['top1_in_mu_top']} "
              f"(drift {row['drift_top1_in_mu_top']}), "
              f"rho(LOO / Banzhaf / Shapley, mu) {row['spearman_leave_one_out_mu']:+.2f} / "
              f"{row['spearman_banzhaf_mu']:+.2f} / {row['spearman_shapley_mu']:+.2f}, {row['probes']} probes, "
              f"exact {t_exact:.0f} s, ReAGent {t_run:.0f} s, load {row['load']}", flush=True)
        if json_path:
            Path(json_path).write_text(json.dumps({"k": k, "rows": rows}, indent=1, default=str) + "\n")
    rows.sort(key=lambda r: MU_PROMPTS.index(r["prompt"]))
    summary = {"prompts": len(rows),
               "median_spearman_reagent_mu": statistics.median(r["spearman_reagent_mu"] for r in rows),
               "median_spearman_drift_mu": statistics.median(r["spearman_drift_mu"] for r in rows),
               "top1_in_mu_top": sum(r["top1_in_mu_top"] for r in rows),
               "drift_top1_in_mu_top": sum(r.get("drift_top1_in_mu_top", False) for r in rows)}
    print(f"== {json.dumps(summary)}")
    return {"k": k, "rows": rows, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("section", choices=["stability", "mu"])
    p.add_argument("--options", default="{}", help="wb.reagent options as JSON")
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--k", type=int, default=1, help="mu: replacement tokens per position")
    p.add_argument("--start", type=int, default=0, help="mu: first prompt (index into MU_PROMPTS)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json, skip their prompts")
    p.add_argument("--budget", type=float, default=float("inf"),
                   help="seconds after which no new prompt starts (run again with --resume to go on)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model = wb.load_model(progress=False)
    print(f"workbench {wb.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"model {model.name}, load average {load_avg()}", flush=True)
    options = json.loads(args.options)
    if args.section == "stability":
        out = stability(model, STABILITY_PROMPTS[: args.prompts], options, args.json, resume=args.resume,
                        budget=args.budget)
    else:
        out = mu_section(model, args.prompts, k=args.k, json_path=args.json, start=args.start, resume=args.resume,
                         budget=args.budget)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
