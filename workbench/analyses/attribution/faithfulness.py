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
* D is the Hellinger distance, D(p, q) = ||sqrt p - sqrt q||_2 / sqrt 2 in [0, 1], as the authors'
  code computes it (REFERENCES.md writes the sum of squares without the square root; that can
  exceed 1 and make Soft-S negative, so we follow the code);
* S0 = the sufficiency of the empty rationale (every attributable embedding zeroed):
  1 - D(p, p_zero) (``s0_metric="hellinger"``, the default: the same scale as Soft-S). The authors'
  code scores S0 with hard sufficiency instead, 1 - max(0, KL(p || p_zero)) (``"kl"``): that S0 is
  usually negative, so every attribution, random included, gets a large Soft-NS and the log ratios
  shrink towards 0 (a one-hot perfect attribution of the planted copy model: +0.19 with "kl",
  +5.0 with "hellinger"); with "hellinger", spread-out attributions often score Soft-NS 0;
  Soft-NS = max(0, Soft-S - S0) / (1 - S0),  Soft-NC = Soft-C / (1 - S0);
* masks are averaged over ``n_mask_samples`` draws. The paper reports
  log(sum metric_method / sum metric_random) over all targets: > 0 means better than random.

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

SOFT_METRICS = ("soft_ns", "soft_nc")
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class FaithfulnessParams:
    n_mask_samples: int = 8  # Bernoulli soft masks per target and method (averaged)
    ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)  # hard rationale sizes as fractions of the context
    faithfulness_seed: int = 0  # masks and the random-importance baseline
    s0_metric: str = "hellinger"  # S0 (empty rationale): "hellinger" (same scale as Soft-S) or "kl" (authors' code)


def distance(p: Float[Tensor, "... vocab"], q: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Hellinger distance ||sqrt p - sqrt q||_2 / sqrt 2, in [0, 1]."""
    return (p.sqrt() - q.sqrt()).square().sum(-1).sqrt() / _SQRT2


def normalise(importance: Float[Tensor, "pos"], attributable: Tensor) -> Tensor:
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


def _masked_rows(E: Tensor, attr: Tensor, imp: Tensor, n: int, ratios, gen: torch.Generator) -> tuple[Tensor, list]:
    """All masked copies of E [T, d] for one importance vector: soft suff, soft comp, hard comp/suff per ratio."""
    T, d = E.shape
    keep_p = imp[:, None].expand(T, d)
    u = torch.rand(2, n, T, d, generator=gen)
    suff = (u[0] < keep_p) | ~attr[:, None]  # [n, T, d]: element kept
    comp = (u[1] < 1 - keep_p) | ~attr[:, None]
    rows = [E * suff.to(E), E * comp.to(E)]
    layout = [("soft_suff", n), ("soft_comp", n)]
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
    if params.s0_metric not in ("kl", "hellinger"):
        raise InputError(f"s0_metric must be 'kl' or 'hellinger', got {params.s0_metric!r}")
    gen = torch.Generator().manual_seed(params.faithfulness_seed)
    rows = []
    for j in range(seq.n_targets):
        T = seq.n_prompt + j
        E = embed(model, seq.context(j)).float().cpu()  # [T, d]
        attr = seq.attributable[:T].cpu()
        y = seq.target_id(j)
        methods = {"random": random_importance(attr, gen)}
        methods.update({m: imp[j, :T] for m, imp in importances.items()})
        batch = [E[None], (E * (~attr).to(E)[:, None])[None]]  # original, all attributable tokens zeroed
        layouts = []
        for name, imp in methods.items():
            r, layout = _masked_rows(E, attr, normalise(imp, attr), params.n_mask_samples, params.ratios, gen)
            batch.append(r)
            layouts.append((name, layout))
        x = torch.cat(batch).to(model.device, model.dtype)
        probs = torch.softmax(last_logits_from_embeds(model, x, max_tokens=max_batch_tokens).float(), -1).cpu()
        p, p_zero = probs[0], probs[1]
        s0 = 1 - (kl(p, p_zero).clamp_min(0) if params.s0_metric == "kl" else distance(p_zero, p))
        denom = max(float(1 - s0), 1e-12)
        at = 2
        for name, layout in layouts:
            values = {}
            for kind, n in layout:
                q = probs[at:at + n]
                at += n
                if kind == "soft_suff":
                    soft_s = float((1 - distance(q, p[None])).mean())
                    values["soft_ns"] = max(0.0, soft_s - float(s0)) / denom
                elif kind == "soft_comp":
                    values["soft_nc"] = float(distance(q, p[None]).mean()) / denom
                else:
                    values[kind] = float(p[y] - q[0, y])
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
