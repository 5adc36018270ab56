"""How far two attributions of the same target agree: rank correlation and top-k overlap.

Used to hold our methods against other implementations (benchmarks/reagent.py: ours vs Inseq, next
to Inseq vs Inseq with another seed, the noise floor) and against known answers (copy tasks).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their ranks), as Spearman's correlation needs."""
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for v in x.unique():
        tied = x == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Float[Tensor, " pos"], b: Float[Tensor, " pos"]) -> float:
    """Spearman's rank correlation over the positions where both are finite (NaN: fewer than 3, or a constant)."""
    ok = a.isfinite() & b.isfinite()
    if ok.sum() < 3:
        return float("nan")
    ra, rb = _ranks(a[ok].double()), _ranks(b[ok].double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / den) if den > 0 else float("nan")


def top_overlap(a: Float[Tensor, " pos"], b: Float[Tensor, " pos"], k: int) -> float:
    """Fraction of a's top-k positions that are also among b's top-k (non-finite positions never count)."""
    ok = a.isfinite() & b.isfinite()
    k = min(k, int(ok.sum()))
    if k == 0:
        return float("nan")
    top = lambda x: set(x.masked_fill(~ok, float("-inf")).topk(k).indices.tolist())  # noqa: E731
    return len(top(a) & top(b)) / k


def agreement(a: Float[Tensor, " pos"], b: Float[Tensor, " pos"]) -> dict[str, float]:
    """Spearman, top-1 and top-3 overlap of two importance vectors of one target."""
    return {"spearman": spearman(a, b), "top1": top_overlap(a, b, 1), "top3": top_overlap(a, b, 3)}


def ranks_first(importance: Float[Tensor, " pos"], position: int) -> bool:
    """Whether ``position`` holds the largest finite importance (ties count as not first)."""
    imp = importance.masked_fill(~importance.isfinite(), float("-inf"))
    best = imp.max()
    return bool(imp[position] == best) and int((imp == best).sum()) == 1
