"""Which reading of ReAGent's probes estimates what ReAGent measures: replayed on enumerated prompts.

    python benchmarks/reagent_readings.py [--seeds 4] [--json out.json]

For each of TUNING_PROMPTS (used to choose the default reading, and for nothing else) every one of the 2^n
replacement outcomes (K = 1 fixed replacement token per position, as in ``reagent_trust.py mu``) goes through the
model once: p(target | outcome) and whether the target is among the top 3. ReAGent's update steps and stopping
checks only ever see such outcomes, so the algorithm replays on that table without the model, with the library's
own draws (``reagent._Probing``): the replay is the library's run, probe steps identical (the script checks it on
the first prompt against ``reagent_target``). Readings of the same probes, each against the exact mu
(``estimand.exact_estimand``) and across two seeds:

* ``softmax``: the paper's and Inseq's, the mean over stopped probes of softmax(scores);
* ``mu``: each position's mean g(Delta) over the update steps that replaced it (the library's default; the
  constant the library subtracts changes no rank);
* ``difference``: that mean less the mean over the steps that kept it;
* ``regression``: least-squares coefficients of g(Delta) on the replaced indicators.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import torch

import workbench as wb
from workbench.analyses.attribution.agreement import spearman
from workbench.analyses.attribution.common import last_logits, prepare
from workbench.analyses.attribution.estimand import exact_estimand, fixed_sampler, g, tied_top
from workbench.analyses.attribution.reagent import ReagentParams, _increments, _Probing, draw_key, reagent_target
from workbench.analyses.attribution.replacers import candidate_ids

TUNING_PROMPTS = (  # disjoint from reagent_trust.py's held-out MU_PROMPTS and STABILITY_PROMPTS and from the tests'
    "The boy kicked the ball over the garden", "My father drinks black coffee every",
    "The baker sold warm bread and sweet", "She locked the door and lost the", "The cat slept all day on the warm",
    "We watched the sunset from the top of the", "The farmer milked the cows in the",
    "He opened his umbrella because it started to", "The pilot landed the plane at the",
    "Grandpa reads the newspaper while drinking his",
    "The students listened quietly while the teacher wrote on the", "The mechanic fixed the engine of my old",
    "I brushed my teeth and went to", "The river flows through the valley to the", "She bought a new dress for the",
    "The kids jumped into the cold swimming", "The doctor gave the patient some",
    "After the rain the streets were wet and", "The chef chopped onions with a sharp", "The old clock on the wall struck",
)
READINGS = ("softmax", "mu", "difference", "regression")


class Table:
    """Every replacement outcome of one prompt, indexed by the bit mask of the replaced positions."""

    def __init__(self, model, prompt: str, seed: int, ratio: float):
        seq = prepare(model, prompt, None, max_new_tokens=1)
        T = seq.n_prompt
        self.ctx, self.attr, self.target = seq.context(0).cpu(), seq.attributable[:T].cpu(), seq.target_id(0)
        cands = candidate_ids(model)
        self.reps = cands[torch.randint(len(cands), (T, 1), generator=torch.Generator().manual_seed(seed))]
        self.pos = self.attr.nonzero()[:, 0]
        n = len(self.pos)
        states = torch.tensor(list(itertools.product((False, True), repeat=n)), dtype=torch.bool).view(-1, n)
        rows = self.ctx.repeat(len(states), 1)
        rows[:, self.pos] = torch.where(states, self.reps[self.pos, 0], self.ctx[self.pos])
        with torch.no_grad():
            logits = last_logits(model, torch.cat([self.ctx[None], rows])).float()
        masks = self.mask(rows)
        self.p_orig = torch.softmax(logits[0], -1)[self.target].double()
        self.p = torch.empty(1 << n, dtype=torch.float64)
        self.p[masks] = torch.softmax(logits[1:], -1)[:, self.target].double()
        self.hit = torch.empty(1 << n, dtype=torch.bool)
        self.hit[masks] = (logits[1:].topk(3, -1).indices == self.target).any(-1)
        self.mu = exact_estimand(model, self.ctx, self.target, self.attr, self.reps, ratio)["mu"].float()
        self.sampler = fixed_sampler(self.reps)

    def mask(self, tokens: torch.Tensor) -> torch.Tensor:
        return ((tokens[:, self.pos] != self.ctx[self.pos]).long() << torch.arange(len(self.pos))).sum(1)


def replay(tab: Table, params: ReagentParams, seed: int) -> dict:
    """ReAGent's probes on the table, step by step, with the library's draws; every update step logged."""
    n = len(tab.pos)
    probing = _Probing(tab.ctx, tab.attr, tab.sampler, draw_key(seed, 0), params.replacing_ratio,
                       max(1, min(params.keep_top_n, n)))
    P = params.n_probes
    scores = probing.initial_scores(P)
    steps, stopped = torch.zeros(P, dtype=torch.long), torch.zeros(P, dtype=torch.bool)
    replaced_log, gain_log = [], []
    for step in range(1, params.max_steps + 1):
        active = (~stopped).nonzero()[:, 0]
        if len(active) == 0:
            break
        at = torch.full((len(active),), step)
        replaced, probed = probing.update_inputs(active, at)
        p_rep = tab.p[tab.mask(probed)]
        scores[active] += _increments(tab.p_orig, p_rep, replaced, tab.attr)
        steps[active] += 1
        replaced_log.append(replaced[:, tab.pos])
        gain_log.append(g(tab.p_orig - p_rep))
        stopped[active[tab.hit[tab.mask(probing.check_inputs(active, at, scores[active]))]]] = True
    return {"scores": scores, "steps": steps, "stopped": stopped, "replaced": torch.cat(replaced_log).double(),
            "gain": torch.cat(gain_log)}


def readings(tab: Table, run: dict) -> dict[str, torch.Tensor]:
    probs = torch.softmax(run["scores"], -1)
    rep, gain = run["replaced"], run["gain"]
    kept = 1 - rep
    mu = (rep * gain[:, None]).sum(0) / rep.sum(0).clamp_min(1)
    nu = (kept * gain[:, None]).sum(0) / kept.sum(0).clamp_min(1)
    design = torch.cat([torch.ones(len(gain), 1, dtype=torch.float64), rep], 1)
    coef = torch.linalg.lstsq(design, gain[:, None], driver="gelsd").solution[1:, 0]
    out = {"softmax": (probs[run["stopped"]] if run["stopped"].any() else probs).mean(0)[tab.pos].double()}
    out.update(mu=mu, difference=mu - nu, regression=coef)
    return {k: v.float() for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model = wb.load_model(progress=False)
    params = ReagentParams(probe_dtype=None)
    print(f"workbench {wb.__version__}, model {model.name}, {len(TUNING_PROMPTS)} prompts, {args.seeds} seeds, "
          f"{params.n_probes} probes x {params.max_steps} steps", flush=True)
    per = {k: {"rho": [], "top": [], "seeds_rho": [], "seeds_top": []} for k in READINGS}
    rows = []
    for i, prompt in enumerate(TUNING_PROMPTS):
        tab = Table(model, prompt, 5000 + i, params.replacing_ratio)
        runs = [replay(tab, params, seed) for seed in range(args.seeds)]
        if i == 0:  # the replay is the library's algorithm: the same probe steps as its batched run
            lib = reagent_target(model, tab.ctx, tab.target, tab.attr, tab.sampler, params, draw_key(0, 0))
            assert torch.equal(lib["steps"], runs[0]["steps"]), (lib["steps"], runs[0]["steps"])
        mu, top = tab.mu[tab.pos], set(tied_top(tab.mu[tab.pos]))
        views = [readings(tab, run) for run in runs]
        row = {"prompt": prompt, "n": len(tab.pos), "steps": [int(r["steps"].sum()) for r in runs]}
        for k in READINGS:
            rho = [spearman(v[k], mu) for v in views]
            first = [int(v[k].argmax()) for v in views]
            row[k] = {"rho_mu": statistics.mean(rho), "top1_in_mu_top": statistics.mean(f in top for f in first),
                      "rho_seeds": spearman(views[0][k], views[1][k]), "same_top1": first[0] == first[1]}
            for key, value in zip(("rho", "top", "seeds_rho", "seeds_top"), row[k].values()):
                per[k][key].append(float(value))
        rows.append(row)
        print(f"  {prompt!r} n {row['n']}: " + ", ".join(f"{k} {row[k]['rho_mu']:+.2f}" for k in READINGS), flush=True)
    summary = {k: {"median_rho_mu": statistics.median(v["rho"]), "top1_in_mu_top": statistics.mean(v["top"]),
                   "median_rho_seeds": statistics.median(v["seeds_rho"]), "same_top1": statistics.mean(v["seeds_top"])}
               for k, v in per.items()}
    for k, s in summary.items():
        print(f"{k:11s} rho(., mu) median {s['median_rho_mu']:+.2f}, top-1 in mu's top set {s['top1_in_mu_top']:.2f}; "
              f"seed 0 vs 1: rho median {s['median_rho_seeds']:+.2f}, same top-1 {s['same_top1']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
