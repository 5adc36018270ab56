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


def equivalence(ours: list[Tensor], reference: list[Tensor], *, margin: float = 0.1, n_boot: int = 2000,
                seed: int = 0) -> dict[str, float | bool]:
    """Whether ``ours`` agrees with ``reference`` as well as the reference agrees with itself: an equivalence test.

    ``floor``: mean Spearman over pairs of distinct reference runs (the method's own noise); ``cross``: mean over
    every (ours, reference) pair. The difference cross - floor gets a 90% interval from a bootstrap that resamples
    whole runs (pairs that share a run are not independent; a resampled run is never paired with itself), and the
    two are *equivalent* when that interval lies inside (-margin, +margin): two one-sided tests at 5% each. Unlike
    "the interval contains 0", this fails when the data cannot tell (a wide interval), so noise cannot pass it.
    ``noninferior``: the one-sided half alone (low > -margin): ours agrees with the reference at least as well as
    the reference with itself, less the margin. That is the claim to test against a noisy reference, whose few
    runs can agree with ours better than with each other by chance; random importance still fails it whenever
    the reference agrees with itself by more than the margin.
    """
    n_o, n_r = len(ours), len(reference)
    if n_o < 2 or n_r < 3:
        raise ValueError("an equivalence test needs at least 2 runs of ours and 3 of the reference")
    cross = torch.tensor([[spearman(a, b) for b in reference] for a in ours], dtype=torch.float64)  # [o, r]
    ref = torch.tensor([[spearman(a, b) if i != j else float("nan") for j, b in enumerate(reference)]
                        for i, a in enumerate(reference)], dtype=torch.float64)  # [r, r]

    def stat(io: Tensor, ir: Tensor) -> float:
        c = cross[io][:, ir].mean()
        f = ref[ir][:, ir]
        distinct = ir[:, None] != ir[None, :]
        return float(c - f[distinct].mean())

    gen = torch.Generator().manual_seed(seed)
    diffs = torch.tensor([stat(torch.randint(n_o, (n_o,), generator=gen), torch.randint(n_r, (n_r,), generator=gen))
                          for _ in range(n_boot)]).nan_to_num(nan=float("-inf"))
    low, high = torch.quantile(diffs, 0.05).item(), torch.quantile(diffs, 0.95).item()
    diff = stat(torch.arange(n_o), torch.arange(n_r))
    floor = float(ref.nanmean())
    return {"floor": floor, "cross": float(cross.mean()), "difference": diff, "low": low, "high": high,
            "equivalent": bool(-margin < low and high < margin), "noninferior": bool(-margin < low)}
