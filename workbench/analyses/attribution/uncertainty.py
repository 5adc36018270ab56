"""How sure a ReAGent result is: intervals over probes, the probability of ranking first, ties.

ReAGent's importance is the mean over independent probes of each probe's importance vector, so the
probes are a sample and the mean has a sampling error the user should see. Per target, from the
n probes the mean is taken over (the stopped ones):

* a 95% interval per position: mean +- t_{n-1} sd / sqrt n (Student's t over probes);
* ``p_first``: the probability that the position ranks first, by a bootstrap over probes (the mean
  recomputed on ``n_boot`` resamples of the probes; a resample's tie for first is split);
* ``tied_first``: the positions not distinguishable from the leader. For each position i, the
  paired difference leader - i over probes (the probes share one softmax, so pairing removes their
  common part); i is tied with the leader when the lower end of that difference's 95% interval is
  <= 0. One probe gives no interval: every position is then reported as tied.

The "mu" reading (:func:`step_uncertainty`) is a ratio over update steps, not a mean over probes: each
position's mean gain over the steps that replaced it, less the mean gain of all steps. Its steps are
independent draws, so the same three figures come from a bootstrap over steps (blocks of consecutive steps when there are more than
``blocks``): the 95% interval is the bootstrap's 2.5-97.5% percentiles, ``p_first`` as above, and i
is tied with the leader when the bootstrap's 2.5% percentile of leader - i is <= 0.

The adaptive run (:func:`settled`) adds batches of probes until the leader stands alone (no other
position tied with it) or the same position led after two batches in a row (the top-1 is stable); the
tokens tied with it are then reported as tied, not resolved by more probes (that can take the cap).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

_Z95 = 1.959963984540054


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (tabulated up to 6, then the Cornish-Fisher
    expansion, within 1e-3 from there)."""
    if df < 1:
        return float("inf")
    exact = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836, 6: 2.446911851}
    if df in exact:
        return exact[df]
    z = _Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2) + (
        3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)


def _resample_counts(n_boot: int, n: int, seed: int) -> Tensor:
    """[n_boot, n]: how often each of n units is drawn in each bootstrap resample (times the units gives the
    resampled sums at once)."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    return counts.scatter_add_(1, torch.randint(n, (n_boot, n), generator=gen), torch.ones(n_boot, n, dtype=torch.float64))


def _p_first(boot: Tensor) -> Tensor:
    """Each column's share of first places over the resamples [n_boot, pos] (a tie for first is split; NaN never leads)."""
    ranked = boot.nan_to_num(nan=-math.inf)
    top = (ranked == ranked.amax(1, keepdim=True)).double()
    return (top / top.sum(1, keepdim=True)).mean(0)


def probe_uncertainty(probes: Float[Tensor, "probe pos"], *, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, Tensor]:
    """Mean, 95% interval, probability of ranking first and the tied-first set over ``probes`` [n, pos]
    (non-finite columns: not attributed; they get NaN and never rank)."""
    ok = probes.isfinite().all(0)
    v = probes[:, ok].double()
    n, T = v.shape
    mean = v.mean(0)
    out = {k: torch.full((probes.shape[1],), float("nan"), dtype=torch.float64) for k in ("mean", "low", "high", "p_first")}
    tied = torch.zeros(probes.shape[1], dtype=torch.bool)
    if T == 0:
        return {**{k: x.float() for k, x in out.items()}, "tied_first": tied}
    leader = int(mean.argmax())
    out["mean"][ok] = mean
    if n >= 2:
        half = t_quantile(n - 1) * v.std(0) / math.sqrt(n)
        out["low"][ok], out["high"][ok] = mean - half, mean + half
        diff = v[:, leader:leader + 1] - v  # [n, T]
        lower = diff.mean(0) - t_quantile(n - 1) * diff.std(0) / math.sqrt(n)
        tied_ok = lower <= 0
        out["p_first"][ok] = _p_first(_resample_counts(n_boot, n, seed) @ v / n)  # B resampled means [B, T]
    else:
        tied_ok = torch.ones(T, dtype=torch.bool)
        out["p_first"][ok] = (torch.arange(T) == leader).double()
    tied[ok.nonzero()[:, 0]] = tied_ok
    return {**{k: x.float() for k, x in out.items()}, "tied_first": tied}


def step_uncertainty(replaced: Bool[Tensor, "step pos"], gain: Float[Tensor, " step"], attributable: Bool[Tensor, " pos"],
                     *, n_boot: int = 1000, blocks: int = 256, seed: int = 0) -> dict[str, Tensor]:
    """Mean gain per position over the steps that replaced it less the mean gain of every step, its 95% interval,
    ``p_first`` and the tied-first set, by a bootstrap over steps; ``replaced_count`` [pos]. Positions never
    replaced, or not attributable, get NaN."""
    N, T = replaced.shape
    rep, g = replaced.double(), gain.double()
    count = rep.sum(0)
    ok = attributable.cpu() & (count > 0)
    nan = torch.full((T,), float("nan"), dtype=torch.float64)
    out = {"mean": nan.clone(), "low": nan.clone(), "high": nan.clone(), "p_first": nan.clone()}
    tied = torch.zeros(T, dtype=torch.bool)
    if not ok.any():
        return {**{k: x.float() for k, x in out.items()}, "tied_first": tied, "replaced_count": count.long()}
    # sums per block of consecutive steps: the bootstrap's units (single steps when N <= blocks)
    block = torch.arange(N) * min(N, blocks) // N
    B = int(block.max()) + 1
    sums = torch.zeros(B, T, dtype=torch.float64).index_add_(0, block, rep * g[:, None])[:, ok]
    counts = torch.zeros(B, T, dtype=torch.float64).index_add_(0, block, rep)[:, ok]
    total = torch.zeros(B, 2, dtype=torch.float64).index_add_(0, block, torch.stack([g, torch.ones_like(g)], 1))
    # centred on the mean gain of every step: a position whose replacement changes nothing gets 0 (mu_i = E[g])
    mean = sums.sum(0) / counts.sum(0) - total[:, 0].sum() / total[:, 1].sum()
    w = _resample_counts(n_boot, B, seed)
    wt = w @ total
    boot = (w @ sums) / (w @ counts) - (wt[:, 0] / wt[:, 1])[:, None]  # [n_boot, n]; NaN: a resample never replaced it
    low, high = boot.nanquantile(0.025, 0), boot.nanquantile(0.975, 0)
    leader = int(mean.argmax())
    tied_ok = (boot[:, leader:leader + 1] - boot).nanquantile(0.025, 0) <= 0
    for k, v in (("mean", mean), ("low", low), ("high", high), ("p_first", _p_first(boot))):
        out[k][ok] = v
    tied[ok.nonzero()[:, 0]] = tied_ok
    return {**{k: x.float() for k, x in out.items()}, "tied_first": tied, "replaced_count": count.long()}


def settled(before: dict[str, Tensor] | None, now: dict[str, Tensor]) -> bool:
    """Whether the adaptive run may stop: the leader stands alone, or it also led after the previous batch
    (``before``)."""
    tied: Bool[Tensor, " pos"] = now["tied_first"]
    if int(tied.sum()) == 1:
        return True
    if before is None:
        return False
    lead = int(torch.nan_to_num(now["mean"], nan=-1.0).argmax())
    lead_before = int(torch.nan_to_num(before["mean"], nan=-1.0).argmax())
    return lead == lead_before
