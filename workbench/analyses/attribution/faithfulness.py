"""Faithfulness of attributions: soft normalised sufficiency / comprehensiveness, hard ERASER metrics.

Soft metrics (Zhao & Aletras 2023, as in the ReAGent authors' evaluation code), per target with
original next-token distribution p:

* importance is made a distribution over the attributable context tokens: |score| / sum |score|
  (ReAGent's scores already are one); the random baseline is softmax(U(0, 1)) per token, as in
  the authors' code, the same draw for every method;
* Soft sufficiency: every element of a token's input embedding is kept with probability equal to
  its importance (Bernoulli mask, zero otherwise), q = the model's distribution on the masked
  input, Soft-S = 1 - D(p, q); Soft comprehensiveness: kept with probability 1 - importance,
  Soft-C = D(p, q);
* D is the Hellinger distance, D(p, q) = ||sqrt p - sqrt q||_2 / sqrt 2 in [0, 1] (``soft_formula=
  "hellinger"``, the default). This is our choice, not the authors': their final evaluation code uses
  D(p, q) = sum (sqrt p - sqrt q)^2 / sqrt 2, the squared distance over sqrt 2 (at most sqrt 2, so Soft-S can
  go negative), for Soft-S, Soft-C and S0 alike, and zeroes BOS in S0 and in the masks (BOS then has
  importance 0: the sufficiency masks drop it, the comprehensiveness masks keep it). ``soft_formula=
  "authors"`` computes exactly that (:func:`soft_normalised`);
* S0 = the sufficiency of the empty rationale (every attributable embedding zeroed; in "authors" every
  embedding, BOS too): 1 - D(p, p_zero) with the same D (``s0_metric="hellinger"``, the default).
  ``s0_metric="kl"`` scores S0 with hard sufficiency instead, 1 - max(0, KL(p || p_zero)); that variant
  appeared only in an intermediate commit of the authors' code, not in their final one. That S0 is
  usually negative, so every attribution, random included, gets a large Soft-NS and the log ratios
  shrink towards 0 (a one-hot perfect attribution of the planted copy model: +0.19 with "kl",
  +5.0 with "hellinger"); with "hellinger", spread-out attributions often score Soft-NS 0;
  Soft-NS = max(0, Soft-S - S0) / (1 - S0),  Soft-NC = Soft-C / (1 - S0);
* masks are averaged over ``n_mask_samples`` draws. The paper reports
  log(sum metric_method / sum metric_random) over all targets: > 0 means better than random.

Retention-controlled soft metrics, pi-Soft-NS / pi-Soft-NC (after Huang & Chan 2026, arXiv 2601.03089:
Soft-NS / Soft-NC are confounded by how much of the input each mask keeps; compare methods at the
same expected retention pi). Our derivation, not the paper's code:

* why here: with importance normalised to sum 1, a Soft-S mask keeps one token's worth of embedding
  in expectation whatever the method, a retained fraction 1/n of the context. Retention is then
  equal across methods, but so small that on a real model nothing suffices: every method's Soft-NS
  is ~0 and it cannot rank them (Soft-NC, removing 1/n, stays informative);
* keep probabilities at retention pi, for n attributable tokens with normalised importance v:
  q_i = min(1, c v_i), c such that mean_i q_i = pi (water-filling, solved exactly by sorting, see
  :func:`retention_probabilities`): the most important tokens saturate at 1 first, the rest share
  the budget in proportion to importance. When importance is too concentrated to reach pi (a
  one-hot keeps at most one token), the budget left goes uniformly to the zero-importance tokens,
  the limit of adding an infinitesimal uniform importance;
* pi-Soft-S: each embedding element of token i kept with probability q_i(pi) (the soft, element-
  wise Bernoulli mask of Soft-S). pi-Soft-C at the same expected retention: each element removed
  with probability q_i(1 - pi), i.e. the expected 1 - pi removed is taken from the most important
  tokens first. Every method, random included, keeps the same expected fraction pi in both;
* normalised with the same S0: pi-Soft-NS = max(0, S - S0) / (1 - S0), pi-Soft-NC = C / (1 - S0),
  each averaged over the grid ``retention`` (default 0.8, 0.9, 0.95; ``retention_mask_samples``
  masks per pi), and reported per pi too (``pi_soft_ns@0.9``...). The grid is high on purpose: on
  SmolLM2-135M copy tasks, keeping 50% or less of the context, in any order, leaves almost nothing
  sufficient, and removing 30% or more destroys the prediction whichever tokens go, so a planted
  perfect attribution and a random one score alike there; from 80% retention up they separate
  (benchmarks/faithfulness.py prints the per-pi table).

Hard metrics (DeYoung et al. 2020): for each rationale ratio r the top ceil(r n) tokens by |score|
are the rationale; comprehensiveness = p(y) - p(y | rationale zeroed) (higher is better),
sufficiency = p(y) - p(y | only the rationale kept) (lower is better); ``*_aopc`` averages over
the ratios. Special tokens (BOS) are never masked.

Every masked input of one target, for all methods at once, goes through one batched forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError
from .common import Sequence, embed, last_logits_from_embeds

SOFT_METRICS = ("soft_ns", "soft_nc", "pi_soft_ns", "pi_soft_nc")
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class FaithfulnessParams:
    n_mask_samples: int = 8  # Bernoulli soft masks per target and method (averaged)
    ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)  # hard rationale sizes as fractions of the context
    faithfulness_seed: int = 0  # masks and the random-importance baseline
    s0_metric: str = "hellinger"  # S0 (empty rationale): "hellinger" (same D as Soft-S) or "kl" (hard sufficiency)
    soft_formula: str = "hellinger"  # "hellinger": ||sqrt p - sqrt q|| / sqrt 2; "authors": the authors' final code's
    #   sum (sqrt p - sqrt q)^2 / sqrt 2 for Soft-S, Soft-C and S0, with BOS zeroed in S0 and the masks
    retention: tuple[float, ...] = (0.8, 0.9, 0.95)  # pi-Soft-NS / NC: expected kept fractions pi of the context
    retention_mask_samples: int = 4  # Bernoulli masks per pi, target and method


def distance(p: Float[Tensor, "... vocab"], q: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Hellinger distance ||sqrt p - sqrt q||_2 / sqrt 2, in [0, 1]."""
    return (p.sqrt() - q.sqrt()).square().sum(-1).sqrt() / _SQRT2


def squared_distance(p: Float[Tensor, "... vocab"], q: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """The authors' distance: sum (sqrt p - sqrt q)^2 / sqrt 2, in [0, sqrt 2]."""
    return (p.sqrt() - q.sqrt()).square().sum(-1) / _SQRT2


def soft_normalised(p: Tensor, q_suff: Tensor, q_comp: Tensor, p_zero: Tensor, formula: str = "hellinger",
                    s0_metric: str = "hellinger") -> tuple[float, float]:
    """(Soft-NS, Soft-NC) from the original distribution ``p`` [vocab], the masked ones ``q_suff`` / ``q_comp``
    [masks, vocab] and the empty input's ``p_zero``: Soft-S = 1 - mean D(p, q_suff), Soft-C = mean D(p, q_comp),
    S0 = 1 - D(p, p_zero), Soft-NS = max(0, Soft-S - S0) / (1 - S0), Soft-NC = Soft-C / (1 - S0); D is
    :func:`distance` ("hellinger") or :func:`squared_distance` ("authors")."""
    dist = squared_distance if formula == "authors" else distance
    s0 = 1 - (kl(p, p_zero).clamp_min(0) if s0_metric == "kl" else dist(p_zero, p))
    denom = max(float(1 - s0), 1e-12)
    soft_s = float((1 - dist(q_suff, p[None])).mean())
    return max(0.0, soft_s - float(s0)) / denom, float(dist(q_comp, p[None]).mean()) / denom


def normalise(importance: Float[Tensor, " pos"], attributable: Tensor) -> Tensor:
    """|importance| / sum |importance| over attributable positions (0 elsewhere; all zero -> uniform)."""
    imp = torch.nan_to_num(importance.float(), nan=0.0).abs().masked_fill(~attributable, 0.0)
    total = imp.sum()
    if total <= 0:
        return attributable.float() / attributable.sum()
    return imp / total


def kl(p: Float[Tensor, "... vocab"], q: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """KL(p || q) in nats (terms with p = 0 contribute 0)."""
    return torch.where(p > 0, p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log()), 0.0).sum(-1)


def random_importance(attributable: Tensor, gen: torch.Generator) -> Tensor:
    """The random baseline of the authors' code: softmax of U(0, 1) over the attributable tokens."""
    u = torch.rand(len(attributable), generator=gen).masked_fill(~attributable, float("-inf"))
    return torch.softmax(u, -1)


def retention_probabilities(imp: Float[Tensor, " pos"], attr: Tensor, pi: float) -> Tensor:
    """Keep probabilities q_i = min(1, c imp_i) with mean pi over the attributable tokens (1 elsewhere).

    Water-filling, solved exactly: with the importances sorted descending v_0 >= v_1 >= ..., saturating
    the first k tokens leaves c_k = (pi n - k) / sum_{i >= k} v_i for the rest; the answer is the
    smallest k with c_k v_k <= 1. If only zero importances remain unsaturated, they share the budget
    left uniformly (the limit of an infinitesimal uniform importance added to every token).
    """
    n = int(attr.sum())
    v, order = torch.sort(imp[attr].double(), descending=True, stable=True)
    budget = pi * n
    k = torch.arange(n, dtype=torch.float64)
    tail = v.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{i >= k} v_i
    left = budget - k
    c = left / tail.clamp_min(1e-300)
    ok = (left > 0) & ((tail <= 1e-12) | (c * v <= 1 + 1e-9))
    k0 = int(ok.nonzero()[0]) if ok.any() else n
    q = torch.ones(n, dtype=torch.float64)
    if k0 < n:
        q[k0:] = c[k0] * v[k0:] if tail[k0] > 1e-12 else left[k0] / (n - k0)
    out = torch.ones(len(attr), dtype=torch.float64)
    out[attr.nonzero()[:, 0][order]] = q
    return out.float()


def _element_masks(E: Tensor, attr: Tensor, keep_p: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` copies of E [T, d], each element of token i kept with probability keep_p[i] (specials always)."""
    T, d = E.shape
    kept = (torch.rand(n, T, d, generator=gen) < keep_p[:, None]) | ~attr[:, None]
    return E * kept.to(E)


def _soft_maskable(attr: Tensor, params: FaithfulnessParams) -> Tensor:
    """Positions the Soft-S / Soft-C masks and S0 may zero: the attributable ones, or every one (BOS too, with
    importance 0) for the authors' formula."""
    return torch.ones_like(attr) if params.soft_formula == "authors" else attr


def _masked_rows(E: Tensor, attr: Tensor, imp: Tensor, params: FaithfulnessParams, gen: torch.Generator
                 ) -> tuple[Tensor, list]:
    """All masked copies of E [T, d] for one importance vector: soft suff / comp, pi-soft suff / comp per pi,
    hard comp / suff per ratio."""
    T, d = E.shape
    n = params.n_mask_samples
    soft = _soft_maskable(attr, params)
    rows = [_element_masks(E, soft, imp, n, gen), _element_masks(E, soft, 1 - imp, n, gen)]
    layout = [("soft_suff", n), ("soft_comp", n)]
    m = params.retention_mask_samples
    for pi in params.retention:
        q = retention_probabilities(imp, attr, pi)
        removed = retention_probabilities(imp, attr, 1 - pi)  # comprehensiveness: removal by importance
        rows += [_element_masks(E, attr, q, m, gen), _element_masks(E, attr, 1 - removed, m, gen)]
        layout += [(f"pi_suff@{pi:g}", m), (f"pi_comp@{pi:g}", m)]
    ratios = params.ratios
    n_attr = int(attr.sum())
    order = torch.argsort(torch.where(attr, imp, -1.0), descending=True, stable=True)  # imp >= 0 here
    for r in ratios:
        k = max(1, math.ceil(r * n_attr))
        top = torch.zeros(T, dtype=torch.bool)
        top[order[:k]] = True
        rows.append((E * (~top).to(E)[:, None])[None])  # rationale removed
        rows.append((E * (top | ~attr).to(E)[:, None])[None])  # only the rationale (and specials) kept
        layout += [(f"comp@{r:g}", 1), (f"suff@{r:g}", 1)]
    return torch.cat(rows), layout


@torch.no_grad()
def faithfulness(model, seq: Sequence, importances: dict[str, Tensor], params: FaithfulnessParams = FaithfulnessParams(),
                 *, max_batch_tokens: int = 8192) -> pd.DataFrame:
    """Tidy table (method, target_index, metric, value) for each method's importance [target, pos],
    plus the ``random`` baseline. One batched forward per target."""
    if params.n_mask_samples < 1 or not params.ratios or not all(0 < r <= 1 for r in params.ratios):
        raise InputError("n_mask_samples must be >= 1 and ratios fractions in (0, 1]")
    if params.retention_mask_samples < 1 or not all(0 < pi < 1 for pi in params.retention):
        raise InputError("retention_mask_samples must be >= 1 and retention fractions in (0, 1)")
    if params.s0_metric not in ("kl", "hellinger"):
        raise InputError(f"s0_metric must be 'kl' or 'hellinger', got {params.s0_metric!r}")
    if params.soft_formula not in ("hellinger", "authors"):
        raise InputError(f"soft_formula must be 'hellinger' or 'authors', got {params.soft_formula!r}")
    gen = torch.Generator().manual_seed(params.faithfulness_seed)
    rows = []
    for j in range(seq.n_targets):
        T = seq.n_prompt + j
        E = embed(model, seq.context(j)).float().cpu()  # [T, d]
        attr = seq.attributable[:T].cpu()
        y = seq.target_id(j)
        methods = {"random": random_importance(attr, gen)}
        methods.update({m: imp[j, :T] for m, imp in importances.items()})
        zeroed = _soft_maskable(attr, params)
        batch = [E[None], (E * (~zeroed).to(E)[:, None])[None]]  # original, the empty rationale (S0)
        layouts = []
        for name, imp in methods.items():
            r, layout = _masked_rows(E, attr, normalise(imp, attr), params, gen)
            batch.append(r)
            layouts.append((name, layout))
        x = torch.cat(batch).to(model.device, model.dtype)
        probs = torch.softmax(last_logits_from_embeds(model, x, max_tokens=max_batch_tokens).float(), -1).cpu()
        p, p_zero = probs[0], probs[1]
        s0 = 1 - (kl(p, p_zero).clamp_min(0) if params.s0_metric == "kl" else distance(p_zero, p))
        denom = max(float(1 - s0), 1e-12)
        soft = {}  # Soft-S / Soft-C masks of the current method, scored together by soft_normalised
        at = 2
        for name, layout in layouts:
            values: dict[str, float] = {}
            pi_ns: list[float] = []
            pi_nc: list[float] = []
            for kind, n in layout:
                q = probs[at:at + n]
                at += n
                if kind == "soft_suff":
                    soft["suff"] = q
                elif kind == "soft_comp":
                    values["soft_ns"], values["soft_nc"] = soft_normalised(
                        p, soft["suff"], q, p_zero, params.soft_formula, params.s0_metric)
                elif kind.startswith("pi_suff"):
                    pi_ns.append(max(0.0, float((1 - distance(q, p[None])).mean()) - float(s0)) / denom)
                    values[f"pi_soft_ns@{kind[8:]}"] = pi_ns[-1]
                elif kind.startswith("pi_comp"):
                    pi_nc.append(float(distance(q, p[None]).mean()) / denom)
                    values[f"pi_soft_nc@{kind[8:]}"] = pi_nc[-1]
                else:
                    values[kind] = float(p[y] - q[0, y])
            if params.retention:  # averaged over the grid of expected retained (removed) fractions
                values["pi_soft_ns"], values["pi_soft_nc"] = float(np.mean(pi_ns)), float(np.mean(pi_nc))
            for prefix in ("comp", "suff"):
                values[f"{prefix}_aopc"] = float(np.mean([values[f"{prefix}@{r:g}"] for r in params.ratios]))
            rows += [{"method": name, "target_index": j, "metric": k, "value": v} for k, v in values.items()]
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method x metric: mean, the random baseline's mean, and the paper's log ratio
    log(sum method / sum random) for the soft metrics (> 0: better than random)."""
    sums = table.groupby(["method", "metric"], sort=False)["value"].agg(["sum", "mean", "count"]).reset_index()
    rand = sums[sums["method"] == "random"].set_index("metric")
    out = []
    for row in sums.itertuples():
        r = rand.loc[row.metric]
        higher_better = not row.metric.startswith("suff")
        log_ratio = math.log(row.sum / r["sum"]) if row.metric in SOFT_METRICS and row.sum > 0 and r["sum"] > 0 else float("nan")
        better = row.mean > r["mean"] if higher_better else row.mean < r["mean"]
        out.append({"method": row.method, "metric": row.metric, "mean": row.mean, "random_mean": r["mean"],
                    "log_ratio": log_ratio, "better_than_random": bool(better) if row.method != "random" else False,
                    "n": int(row.count)})
    return pd.DataFrame(out)
