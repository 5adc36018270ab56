"""What ReAGent estimates, computed exactly: mu_i = E[g(Delta) | position i replaced], by enumeration.

One ReAGent update step replaces each attributable position independently with probability r by a
replacement token and adds g(Delta) to the replaced positions' scores and -g(Delta) to the others',
where Delta = p_o - p(y | replaced input) and g(d) = logit(0.5 d + 0.5) (odd in d). The replacement
sets do not depend on the scores (only the stopping check does), so every step is an independent
draw and a position's expected score change per step is

    r E[g | i replaced] - (1 - r) E[g | i kept] = 2 r mu_i - E[g],

the same for every position but for mu_i: ReAGent's scores drift apart in the order of mu, and any
faithful reading of its probes should rank positions as mu does.

With a fixed set of K replacement tokens per position (drawn uniformly, as the sampler
:func:`fixed_sampler` does), the replacement distribution has (K + 1)^n outcomes over n attributable
positions; for short contexts all of them fit in a few batched forwards, and mu is exact. Beside it,
from the same forwards, the classic game-theoretic readings of the value v(S) = p_o - E[p(y | the
positions S replaced)] (the expectation over the K tokens per replaced position):

* leave-one-out: v({i});
* Banzhaf: the mean of v(S + i) - v(S) over every S without i;
* Shapley: the same marginal contributions weighted |S|! (n - |S| - 1)! / n!.
"""

from __future__ import annotations

import itertools
import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ...errors import InputError
from .common import last_logits
from .replacers import Sampler

MAX_ROWS = 1 << 16  # (K + 1)^n forwards at most: beyond, the enumeration is refused


def fixed_sampler(replacements: Int[Tensor, "pos k"]) -> Sampler:
    """A sampler that replaces position t by one of ``replacements[t]`` (K tokens), uniformly."""
    T, K = replacements.shape
    vocab = int(replacements.max()) + 1
    table = torch.zeros(T, vocab, dtype=torch.float64)
    table.scatter_add_(1, replacements, torch.full((T, K), 1.0 / K, dtype=torch.float64))
    return Sampler(replacements.unique(), table.float())


def g(delta: Tensor, eps: float = 1e-6) -> Tensor:
    """ReAGent's score change of a replaced position: logit(0.5 Delta + 0.5), clamped as the run clamps it."""
    return torch.logit((0.5 * delta.double() + 0.5).clamp(eps, 1 - eps))


@torch.no_grad()
def exact_estimand(model, context: Int[Tensor, " ctx"], target: int, attributable: Bool[Tensor, " ctx"],
                   replacements: Int[Tensor, "ctx k"], ratio: float, *, max_batch_tokens: int = 8192
                   ) -> dict[str, Tensor]:
    """mu, leave-one-out, Banzhaf and Shapley [ctx] (NaN at positions not attributable), exactly, for
    ReAGent's update step with replacing ratio ``ratio`` and ``replacements[t]`` the K tokens position t is
    replaced by (uniformly). Also ``p_orig`` and the number of forwards."""
    ctx = context.cpu()
    pos = attributable.cpu().nonzero()[:, 0]
    n, K = len(pos), replacements.shape[1]
    if not 0 < ratio <= 1:
        raise InputError(f"ratio must lie in (0, 1], got {ratio}")
    if (K + 1) ** n > MAX_ROWS:
        raise InputError(f"{n} positions with {K} replacements each need {(K + 1) ** n} forwards (at most {MAX_ROWS}); "
                         "shorten the context or use fewer replacement tokens")
    states = torch.tensor(list(itertools.product(range(K + 1), repeat=n)), dtype=torch.long).view(-1, n)  # 0: kept
    rows = ctx.repeat(len(states), 1)
    picked = replacements.cpu()[pos][torch.arange(n), (states - 1).clamp_min(0)]  # [R, n]
    rows[:, pos] = torch.where(states > 0, picked, ctx[pos])
    logits = last_logits(model, torch.cat([ctx[None], rows]).to(model.device), max_tokens=max_batch_tokens)
    probs = torch.softmax(logits.double(), -1)[:, target].cpu()
    p_orig, p = probs[0], probs[1:]
    replaced = states > 0  # [R, n]
    k = replaced.sum(1)
    weight = (ratio / K) ** k * (1 - ratio) ** (n - k)  # probability of each outcome
    gain = g(p_orig - p)
    mu = (weight[:, None] * replaced * gain[:, None]).sum(0) / ratio  # E[g | i replaced]

    # v(S): the drop in p(y) when exactly the set S is replaced, averaged over the K tokens per replaced position
    mask_id = (replaced.long() << torch.arange(n)).sum(1)  # the subset as a bit mask
    v = torch.zeros(1 << n, dtype=torch.float64).index_add_(0, mask_id, p_orig - p)
    v /= K ** torch.tensor([bin(m).count("1") for m in range(1 << n)], dtype=torch.float64)
    loo, banzhaf, shapley = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
    sizes = torch.tensor([bin(m).count("1") for m in range(1 << n)])
    for i in range(n):
        without = torch.tensor([m for m in range(1 << n) if not m >> i & 1])
        marginal = v[without | (1 << i)] - v[without]
        s = sizes[without]
        banzhaf[i] = marginal.mean()
        shapley[i] = (marginal * torch.tensor([math.factorial(int(a)) * math.factorial(n - int(a) - 1)
                                               for a in s], dtype=torch.float64)).sum() / math.factorial(n)
        loo[i] = v[1 << i]
    out = {}
    for name, values in (("mu", mu), ("leave_one_out", loo), ("banzhaf", banzhaf), ("shapley", shapley)):
        full = torch.full((len(ctx),), float("nan"), dtype=torch.float64)
        full[pos] = values
        out[name] = full
    return {**out, "p_orig": p_orig, "forwards": torch.tensor(len(rows) + 1)}


def tied_top(mu: Float[Tensor, " ctx"], tolerance: float = 0.05) -> list[int]:
    """Positions within ``tolerance`` x (max - min) of the largest mu: the top set a reading may pick from."""
    ok = mu.isfinite()
    top, low = mu[ok].max(), mu[ok].min()
    return (ok & (mu >= top - tolerance * (top - low))).nonzero()[:, 0].tolist()
