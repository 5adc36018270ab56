"""ReAGent (Zhao & Shan 2024): model-agnostic token attribution by recursive random replacement.

The algorithm, per target token y after a context x_1..x_T with p_o = p(y | x), and where each
choice comes from (Inseq 0.7.1 ``attr/feat/ops/reagent_core``, which the authors' code became):

* P independent probes each keep logit scores s ~ U(0, 1) over the context positions
  (``DeltaProbImportanceScoreEvaluator``: ``torch.rand``).
* Update step: each position is replaced independently with probability ``replacing_ratio``
  (``UniformTokenReplacer``: ``rand < ratio``) by a sampled token; Delta = p_o - p(y | replaced);
  replaced positions get d = +Delta, all others d = -Delta; s += logit(0.5 d + 0.5)
  (``update_importance_score``). Importance = softmax(s) over the context.
* Stopping check after every update: the ``keep_top_n`` positions of highest importance are kept
  and every other position is replaced (``RankingTokenReplacer``); the probe stops once y is among
  the model's ``stop_top_k`` predictions (``TopKStoppingConditionEvaluator``). A stopped probe's
  scores freeze. The loop ends when every probe stopped or after ``max_steps``.
* The result is the mean of softmax(s) over the stopped probes (``AggregateRationalizer``).

What we return by default is another reading of the same probes (``reading="mu"``): per position, the
mean of g(Delta) = logit(0.5 Delta + 0.5) over every update step, of every probe, that replaced it, less
the mean over all steps (so a position whose replacement changes nothing gets 0). The first term is a
direct estimate of mu_i = E[g(Delta) | i replaced], the quantity by which the scores drift apart
(:mod:`.estimand`); the published reading sees it only through each probe's final softmax, blurred by
the random start, the early stop and softmax's winner-take-all. Batches of probes are added until every
position was replaced MIN_REPLACED times. Chosen on 20 tuning prompts (benchmarks/reagent_readings.py);
measured on held-out ones in benchmarks/README.md. ``reading="softmax"`` is the published (and Inseq's).

Where ours differs, on purpose: special tokens (BOS) are never replaced and get importance 0
(Inseq replaces them like any token); logit's argument is clamped to [1e-6, 1 - 1e-6] (Inseq's
is +inf when Delta reaches 1); when no probe stopped, Inseq 0.7.1 returns 0/0 = NaN and we return the
mean over all probes, flagged in ``probe_stopped`` (Inseq's main branch has since done the same).
Inseq and the authors' code sample a replacement of the same part of speech (NLTK tags, downloaded at
run time); ``replacer="pos"`` does that offline (a tag table built from a shipped lexicon, :mod:`.pos_tags`;
coarse UPOS tags instead of NLTK's Penn tags, and the original token is never drawn), while
``replacer="uniform"`` (the default) draws from the whole vocabulary without special tokens, which is not
what either does: under it, every token whose replacement alone removes y is hit alike, and they tie
(see :mod:`.replacers` for the others). It stays the default after 50 held-out copy tasks: the copied
word first in 46 of 50 against 49 for ``pos`` and ``predictions`` (not a significant difference), seeds
that agree more, no extra package; those two cost half as much (benchmarks/README.md).

What ReAGent measures, and its limit: a position's score grows when replacing it lowers p(y) more
than replacing the other positions does. Positions that are each *necessary* (replacing any one of
them drops p(y) to about 0) drift up at the same rate, so their order within one probe is a random
walk; with several necessary tokens (the copied word, but also the template words around it) the
mean over probes splits the importance between them and the top token changes with the seed. More
probes sharpen the mean; only a method that looks inside the model (integrated gradients) tells
the word that carries y's identity from the words that are merely required.

Batched here: the replacements of an update step do not depend on the scores, so a *chunk*
of C steps for all active probes runs as one batch of probes x C rows; the scores after
each of the C steps are cumulative sums, so the C stopping checks also run as one batch, and
each probe freezes at its first successful check. Every random number is a hash of (seed,
target, probe, step, position) (``draws.py``), so the batched run draws exactly what the
step-by-step loop :func:`reagent_target_stepwise` draws and returns the same numbers (a test
checks it), whatever the chunking. The checks of one chunk share a forward pass with the
updates of the next (speculative for the probes the checks stop; their rows are dropped), and
the first pass also carries the unchanged context for p(y | x): about one forward per chunk
instead of two, which is what counts where a forward costs the same however few rows it has
(small batches on a CPU stream every weight from memory; GPUs are latency-bound). Stopped
probes leave the batch (Inseq keeps computing them). Chunks start at one step and grow up to
``chunk_tokens`` per forward but never beyond the number of steps already run, so a probe that
stops early wastes little. Only the last position is unembedded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..._progress import progress
from ...engine.registry import Analysis
from ...errors import InputError
from ...types import ProbeImportance, ProbeSteps, ProbeStopped
from . import draws
from .chat import Messages
from .common import Sequence, last_logits, prepare
from .replacers import REPLACERS, MaskedLM, Sampler, build_sampler
from .result import AttributionResult, attribution_result
from .uncertainty import probe_uncertainty, settled, step_uncertainty
from ...models.contract import HookedSource

_EPS = 1e-6  # keeps logit(0.5 d + 0.5) finite when |Delta| reaches 1
READINGS = ("mu", "softmax")
MIN_REPLACED = 4  # reading "mu": update steps that replaced each position, at least (probe batches are added)


@dataclass(frozen=True)
class ReagentParams:
    """ReAGent's hyperparameters.

    Inseq 0.7.1's ``reagent`` defaults: num_probes=16, keep_top_n=5, stopping_condition_top_k=3,
    replacing_ratio=0.3, max_probe_steps=3000 (the paper's code: top-n 5, k 3, ratio 0.3,
    3000-5000 steps; the paper's text: ratio 0.1-0.3). Ours are the same except ``n_probes`` 8 and
    ``max_steps`` 500, so that the default run (and ``workbench report``) finishes in well under a
    minute on a CPU; pass ``n_probes=16, max_steps=3000`` for Inseq's settings. Probes that hit
    ``max_steps`` are flagged (``probe_stopped`` False), never silently mixed in.
    """

    n_probes: int = 8  # independent probes averaged at the end (Inseq num_probes: 16); with adaptive, per batch
    reading: str = "mu"  # "mu": each position's mean score gain over the update steps that replaced it (module
    #   docstring; batches of probes are added until every position was replaced MIN_REPLACED times);
    #   "softmax": the mean of softmax(scores) over the stopped probes, as the paper and Inseq
    # add batches of n_probes probes until the top-1 is settled (uncertainty.settled). Off by default: at the
    # defaults two seeds already agree on held-out prompts (benchmarks/README.md)
    adaptive: bool = False
    max_probes: int = 256  # cap on probes per target (adaptive runs, and the "mu" reading's MIN_REPLACED top-up)
    max_steps: int = 500  # update + stopping-check steps per probe at most (Inseq max_probe_steps: 3000)
    keep_top_n: int = 5  # positions kept in the stopping check (Inseq keep_top_n); 0: use keep_ratio
    keep_ratio: float = 0.0  # fraction kept when keep_top_n == 0 (Inseq keep_ratio)
    stop_top_k: int = 3  # stop when the target is among the top k predictions (Inseq stopping_condition_top_k)
    replacing_ratio: float = 0.3  # chance that a position is replaced in an update step (Inseq replacing_ratio)
    replacer: str = "uniform"  # "uniform" (non-special vocabulary), "pos" (uniform among tokens of the same part of
    #   speech, offline tags: replacers.pos_sampler; needs lemminflect), "predictions" (the model's own), "mlm"
    mlm_path: str | None = None  # saved HF masked LM folder for replacer="mlm" (same vocabulary as the model)
    seed: int = 0  # every draw is a hash of (seed, target, probe, step, position): same seed, same result
    max_batch_tokens: int = 8192  # tokens per forward pass (rows x context length); lower it to save memory
    chunk_tokens: int = 0  # tokens per forward the step chunks aim at; 0: auto (CPU 512, 4096 with probe_dtype; GPU 32768)
    probe_dtype: str | None = "auto"  # "bfloat16" / "float16": probe forwards under torch.autocast (3x faster per
    #   token on CPUs with AMX; probabilities move by ~1e-2); None: the model's own dtype; "auto": bfloat16 where
    #   the device runs it fast (a CUDA GPU with bfloat16, a CPU with AMX tiles) and the model is float32, else None;
    #   resolved before the cache key is made, so the result's config names the dtype the probes ran in


@dataclass(frozen=True)
class ReagentConfig(ReagentParams):
    prompt: str = "The Eiffel Tower is located in the city of"  # the context; BOS is prepended when the model has one
    target: str | int | None = None  # a token (or text: each token in turn) to attribute; None: generate
    max_new_tokens: int = 1  # generated tokens attributed when target is None (greedy)
    prepend_bos: bool | None = None  # None: the model's default (TransformerLens')
    messages: Messages | None = None  # a chat instead of prompt: (role, content) pairs, see chat.py


def check_params(p: ReagentParams) -> None:
    if p.n_probes < 1 or p.max_steps < 1:
        raise InputError("n_probes and max_steps must be at least 1")
    if p.reading not in READINGS:
        raise InputError(f"unknown reading {p.reading!r}; choose one of {', '.join(READINGS)}")
    if p.adaptive and p.max_probes < p.n_probes:
        raise InputError(f"max_probes ({p.max_probes}) must be at least n_probes ({p.n_probes})")
    if not 0.0 < p.replacing_ratio <= 1.0:
        raise InputError(f"replacing_ratio must lie in (0, 1], got {p.replacing_ratio}")
    if p.keep_top_n < 0 or (p.keep_top_n == 0 and not 0.0 < p.keep_ratio <= 1.0):
        raise InputError("keep_top_n must be >= 1, or 0 with keep_ratio in (0, 1]")
    if p.stop_top_k < 1:
        raise InputError("stop_top_k must be at least 1")
    if p.replacer not in REPLACERS:
        raise InputError(f"unknown replacer {p.replacer!r}; choose one of {', '.join(REPLACERS)}")
    if p.probe_dtype not in (None, "auto", "bfloat16", "float16"):
        raise InputError(f"probe_dtype must be None, 'auto', 'bfloat16' or 'float16', got {p.probe_dtype!r}")


def probe_dtype(model, params: ReagentParams) -> str | None:
    """The dtype probe forwards run in: ``params.probe_dtype`` with "auto" resolved for this model and device."""
    if params.probe_dtype != "auto":
        return params.probe_dtype
    if model.dtype != torch.float32:
        return None  # already half precision: nothing to gain
    device = model.device
    fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else (
        device.type == "cpu" and getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return "bfloat16" if fast else None


def resolve_probe_dtype(model, config):
    """``prepare``: the config checked, with ``probe_dtype="auto"`` replaced by what it resolves to on this model
    and device ("bfloat16", or None for the model's own dtype), so the cache key and the saved config say which
    precision the probes ran in: a bfloat16 run and a float32 run never share a key."""
    check_params(config)
    if config.probe_dtype != "auto":
        return config
    return dataclasses.replace(config, probe_dtype=probe_dtype(model, config))


def _precision(model, dtype: str | None):
    """The autocast context for probe forwards (a no-op context for ``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=getattr(torch, dtype))


def _first_true(hit: Bool[Tensor, "a c"]) -> Int[Tensor, " a"]:
    """Index of the first True per row, or the row length when there is none."""
    c = hit.shape[1]
    idx = torch.arange(c).expand_as(hit)
    return torch.where(hit, idx, c).amin(1)


@dataclass(frozen=True)
class _Probing:
    """What every step of one target's probes needs: the context, what may be replaced, the draws."""

    ctx: Int[Tensor, " ctx"]
    attr: Bool[Tensor, " ctx"]
    sampler: Sampler
    key: int  # seed and target: the draws' counter key
    ratio: float
    keep_n: int
    first_probe: int = 0  # the draws' probe number of local probe 0 (an adaptive run's later batches)

    def initial_scores(self, n_probes: int) -> Float[Tensor, "probe ctx"]:
        probes = torch.arange(n_probes) + self.first_probe
        u = draws.uniform(self.key, draws.INIT, probes, torch.zeros_like(probes), len(self.ctx))
        return u.masked_fill(~self.attr, float("-inf"))

    def update_inputs(self, probe: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """Update step ``step`` of each row's probe: (replaced mask, replaced input) [rows, ctx]."""
        T = len(self.ctx)
        probe = probe + self.first_probe
        replaced = (draws.uniform(self.key, draws.REPLACE, probe, step, T) < self.ratio) & self.attr
        tokens = self.sampler.pick(draws.uniform(self.key, draws.UPDATE_TOKENS, probe, step, T))
        return replaced, torch.where(replaced, tokens, self.ctx)

    def check_inputs(self, probe: Tensor, step: Tensor, scores: Tensor) -> Tensor:
        """Stopping check after step ``step``: the top ``keep_n`` positions by score kept, the others replaced."""
        keep = torch.zeros(scores.shape, dtype=torch.bool).scatter_(-1, scores.topk(self.keep_n, -1).indices, True)
        tokens = self.sampler.pick(draws.uniform(self.key, draws.CHECK_TOKENS, probe + self.first_probe, step,
                                                 len(self.ctx)))
        return torch.where(self.attr & ~keep, tokens, self.ctx)


def _gain(p_orig: Tensor, p_rep: Tensor) -> Tensor:
    """g(Delta) = logit(0.5 Delta + 0.5): a replaced position's score change in one update step."""
    return torch.logit((0.5 * (p_orig - p_rep).double() + 0.5).clamp(_EPS, 1 - _EPS))


def _increments(p_orig: Tensor, p_rep: Tensor, replaced: Tensor, attr: Tensor) -> Tensor:
    """Score changes of one update per row: +g(Delta) where replaced, -g(Delta) = g(-Delta) elsewhere (g is odd)."""
    gain = _gain(p_orig, p_rep)[..., None]
    return torch.where(replaced, gain, -gain).masked_fill(~attr, 0.0)


class _StepLog:
    """The update steps that counted (a stopped probe's speculative steps do not): which positions each replaced and
    its gain g(Delta), in (probe, step) order whatever the chunking, for the "mu" reading."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def add(self, probe: Tensor, step: Tensor, replaced: Tensor, gain: Tensor) -> None:
        self.parts.append((probe, step, replaced, gain))

    def tensors(self, width: int) -> dict[str, Tensor]:
        if not self.parts:
            return {"step_replaced": torch.zeros(0, width, dtype=torch.bool), "step_gain": torch.zeros(0, dtype=torch.float64)}
        probe, step, replaced, gain = (torch.cat(x) for x in zip(*self.parts))
        order = torch.argsort(probe * (int(step.max()) + 1) + step)
        return {"step_replaced": replaced[order], "step_gain": gain[order]}


def _probing(context: Tensor, attributable: Tensor, sampler: Sampler, params: ReagentParams, key: int,
             first_probe: int = 0) -> _Probing:
    attr = attributable.cpu()
    n_attr = int(attr.sum())
    keep_n = params.keep_top_n or math.ceil(params.keep_ratio * n_attr)
    return _Probing(context.cpu(), attr, sampler, key, params.replacing_ratio, max(1, min(keep_n, n_attr)), first_probe)


def _result(scores: Tensor, steps: Tensor, stopped: Tensor, p_orig: Tensor, initial: Tensor, log: _StepLog
            ) -> dict[str, Tensor]:
    probs = torch.softmax(scores, -1).float()  # [P, T]; special positions (-inf) get 0
    chosen = probs[stopped] if stopped.any() else probs
    # each probe's mean score change per update step: an unbiased estimate of 2 r mu_i - E[g] (the drift whose
    # order is mu's, see estimand.py), free of the random start and of softmax's winner-take-all
    drift = ((scores - initial) / steps.clamp_min(1)[:, None]).nan_to_num(nan=0.0).float()
    return {"importance": chosen.mean(0), "probe_importance": probs, "steps": steps, "stopped": stopped,
            "p_orig": p_orig, "drift": drift, **log.tensors(scores.shape[1])}


@torch.no_grad()
def reagent_target(
    model, context: Int[Tensor, " ctx"], target: int, attributable: Bool[Tensor, " ctx"], sampler: Sampler,
    params: ReagentParams, key: int, first_probe: int = 0,
) -> dict[str, Tensor]:
    """ReAGent for one target after ``context``, batched: importance [ctx] plus per-probe details.

    All tensors on CPU. ``attributable`` False positions (special tokens) are never replaced and get
    importance 0. ``key``: the counter key of this target's draws (:func:`draw_key`); ``first_probe``: the
    draws' number of this call's first probe (an adaptive run's later batches draw afresh).
    """
    probing = _probing(context, attributable, sampler, params, key, first_probe)
    ctx, attr = probing.ctx, probing.attr
    T, P = len(ctx), params.n_probes

    dtype = probe_dtype(model, params)
    precision = _precision(model, dtype)  # p_orig and every probe in the same precision: no offset in Delta
    scores = probing.initial_scores(P)  # [probe, ctx], float64: sums in the same order as the step loop's
    steps = torch.zeros(P, dtype=torch.long)
    stopped = torch.zeros(P, dtype=torch.bool)
    active = torch.arange(P)
    # fp32 on CPU runs fastest at ~512 tokens per forward; autocast amortises its weight casts over larger batches
    aim = params.chunk_tokens or (32768 if model.device.type != "cpu" else 4096 if dtype else 512)
    done, chunk = 0, 1
    p_orig: Tensor | None = None  # p(target | context), from the first forward's extra row
    pending: _Pending | None = None  # the last chunk's stopping checks: they share a forward with the next chunk's
    log = _StepLog()
    bar = progress(desc="ReAGent steps", total=params.max_steps)
    while True:
        A = len(active)
        C = min(chunk, params.max_steps - done) if A else 0
        if C == 0 and pending is None:
            break
        # steps done+1 .. done+C of every probe not known to have stopped, as rows (probe, step). For a probe
        # whose pending check stops it, these rows are speculation and are dropped below.
        row_probe = active.repeat_interleave(C)
        row_step = torch.arange(done + 1, done + C + 1).repeat(A)
        replaced, probed = probing.update_inputs(row_probe, row_step)
        rows = ([ctx[None]] if p_orig is None else []) + [probed]
        rows += [pending.checked] if pending is not None else []
        with precision:  # one forward: [original] + updates + stopping checks
            logits = last_logits(model, torch.cat(rows), max_tokens=params.max_batch_tokens).float()
        if p_orig is None:
            p_orig, logits = torch.softmax(logits[0], -1)[target].cpu(), logits[1:]
        p_rep = torch.softmax(logits[: A * C], -1)[:, target].cpu().view(A, C)

        alive = torch.ones(A, dtype=torch.bool)
        if pending is not None:  # resolve the last chunk: each probe freezes at its first successful check
            Cp = pending.C
            hit = (logits[A * C:].topk(params.stop_top_k, dim=-1).indices == target).any(-1).cpu().view(A, Cp)
            first = _first_true(hit)  # [A]
            alive = first >= Cp
            at = torch.where(alive, Cp - 1, first)
            scores[active] = pending.cum[torch.arange(A), at]
            steps[active] += at + 1
            counted = torch.arange(Cp)[None] <= at[:, None]  # [A, Cp]
            log.add(active[:, None].expand(A, Cp)[counted], (done - Cp + 1 + torch.arange(Cp)).expand(A, Cp)[counted],
                    pending.replaced[counted], pending.gain[counted])
            stopped[active[~alive]] = True
            pending = None
            bar.set_postfix_str(f"{int(stopped.sum())}/{P} probes stopped")
        active, p_rep, replaced = active[alive], p_rep[alive], replaced.view(A, C, T)[alive]
        A = len(active)
        if C == 0 or A == 0:
            continue

        # apply the C updates; a running sum from the current scores adds in the step loop's order
        inc = _increments(p_orig, p_rep, replaced, attr)  # [A, C, T]
        cum = torch.cat([scores[active, None], inc], 1).cumsum(1)[:, 1:]  # [A, C, T] scores after each step
        # their stopping checks (run with the next forward)
        checked = probing.check_inputs(active.repeat_interleave(C), torch.arange(done + 1, done + C + 1).repeat(A),
                                       cum.reshape(A * C, T))
        pending = _Pending(C, cum, checked, replaced & attr, _gain(p_orig, p_rep))
        done += C
        bar.update(C)
        chunk = min(done, max(1, round(aim / (A * T))))  # never speculate further ahead than the steps already run

    bar.close()
    assert p_orig is not None, "the loop runs at least one forward (max_steps >= 1)"
    return _result(scores, steps, stopped, p_orig, probing.initial_scores(P), log)


@dataclass(frozen=True)
class _Pending:
    """A chunk's stopping checks, run with the next chunk's forward: its size, its running scores, its inputs."""

    C: int
    cum: Tensor  # [probe, step, pos] scores after each of the chunk's steps
    checked: Tensor  # the inputs of its stopping checks
    replaced: Tensor  # [probe, step, pos] the positions each update step replaced
    gain: Tensor  # [probe, step] each update step's g(Delta)


@torch.no_grad()
def reagent_target_stepwise(
    model, context: Int[Tensor, " ctx"], target: int, attributable: Bool[Tensor, " ctx"], sampler: Sampler,
    params: ReagentParams, key: int, first_probe: int = 0,
) -> dict[str, Tensor]:
    """The same algorithm as :func:`reagent_target`, as the plain loop of the reference implementation: two
    forwards per step for every probe, stopped ones included. Slow; it is what the batched run is checked against."""
    probing = _probing(context, attributable, sampler, params, key, first_probe)
    ctx, attr = probing.ctx, probing.attr
    P = params.n_probes
    probes = torch.arange(P)
    with _precision(model, probe_dtype(model, params)):
        p_orig = torch.softmax(last_logits(model, ctx[None]).float()[0], -1)[target].cpu()
        scores = probing.initial_scores(P)
        steps = torch.zeros(P, dtype=torch.long)
        stopped = torch.zeros(P, dtype=torch.bool)
        log = _StepLog()
        for step in range(1, params.max_steps + 1):
            at = torch.full((P,), step)
            replaced, probed = probing.update_inputs(probes, at)
            p_rep = torch.softmax(last_logits(model, probed).float(), -1)[:, target].cpu()
            log.add(probes[~stopped], at[~stopped], (replaced & attr)[~stopped], _gain(p_orig, p_rep)[~stopped])
            scores = torch.where(stopped[:, None], scores, scores + _increments(p_orig, p_rep, replaced, attr))
            steps += ~stopped
            logits = last_logits(model, probing.check_inputs(probes, at, scores)).float()
            stopped |= (logits.topk(params.stop_top_k, dim=-1).indices == target).any(-1).cpu()
            if stopped.all():
                break
    return _result(scores, steps, stopped, p_orig, probing.initial_scores(P), log)


def draw_key(seed: int, target_index: int) -> int:
    """The counter key of target ``target_index``'s draws: distinct per (seed, target)."""
    return seed * 1_000_003 + target_index


def load_mlm(params: ReagentParams, model, mlm: MaskedLM | None) -> MaskedLM | None:
    if params.replacer != "mlm" or mlm is not None:
        return mlm
    if not params.mlm_path:
        raise InputError("replacer='mlm' needs mlm_path (a saved HF masked LM folder) or mlm=MaskedLM(...)")
    return MaskedLM.from_folder(params.mlm_path, device=model.device)


def _cat(batches: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    keys = ("probe_importance", "steps", "stopped", "drift", "step_replaced", "step_gain")
    return {**{k: torch.cat([b[k] for b in batches]) for k in keys}, "p_orig": batches[0]["p_orig"]}


def reading_uncertainty(res: dict[str, Tensor], attr: Tensor, params: ReagentParams, key: int) -> dict[str, Tensor]:
    """The reading's importance (``mean``), its interval, ``p_first`` and ``tied_first`` (:mod:`.uncertainty`)."""
    if params.reading == "mu":
        return step_uncertainty(res["step_replaced"], res["step_gain"], attr, seed=key)
    chosen = res["probe_importance"][res["stopped"]] if res["stopped"].any() else res["probe_importance"]
    count = res["step_replaced"].sum(0)
    return {**probe_uncertainty(chosen.masked_fill(~attr, float("nan")), seed=key), "replaced_count": count}


def reagent_probes(model, context: Tensor, target: int, attributable: Tensor, sampler: Sampler, params: ReagentParams,
                   key: int) -> dict[str, Tensor]:
    """One target's probes: ``n_probes`` of them; more batches of ``n_probes`` while the "mu" reading has a position
    replaced fewer than MIN_REPLACED times, and with ``adaptive`` until :func:`.uncertainty.settled` (at most
    ``max_probes``); their importance, its uncertainty and the per-probe details."""
    attr = attributable.cpu()
    cap = max(params.max_probes, params.n_probes)
    batches: list[dict[str, Tensor]] = []
    before = None
    while True:
        n = len(batches) * params.n_probes
        size = min(params.n_probes, cap - n)
        batch = dataclasses.replace(params, n_probes=size) if size != params.n_probes else params
        batches.append(reagent_target(model, context, target, attributable, sampler, batch, key, first_probe=n))
        res = _cat(batches)
        unc = reading_uncertainty(res, attr, params, key)
        counts = unc["replaced_count"][attr]
        few = params.reading == "mu" and counts.numel() > 0 and int(counts.min()) < MIN_REPLACED
        if len(res["steps"]) >= cap or not (few or (params.adaptive and not settled(before, unc))):
            break
        before = unc
    return {**res, **unc}


def sequence_sampler(model, seq: Sequence, params: ReagentParams, mlm: MaskedLM | None = None) -> Sampler:
    """The replacer's sampler for every context of ``seq`` (contexts are prefixes: one table)."""
    return build_sampler(model, seq.ids[:-1], params.replacer, load_mlm(params, model, mlm))


def replacer_meta(sampler: Sampler, seq: Sequence) -> dict:
    """What a result records about its replacer: with ``replacer="pos"``, each context position's tag and the
    positions that fell back to uniform (their tag class had no other token)."""
    if sampler.tags is None:
        return {}
    return {"replacer_tags": list(sampler.tags), "replacer_fallback": list(sampler.fallback)}


def reagent_sequence(model, seq: Sequence, params: ReagentParams, mlm: MaskedLM | None = None,
                     sampler: Sampler | None = None) -> dict[str, Tensor]:
    """ReAGent for every target of ``seq``: tensors [target, pos] with NaN outside each context, per-probe tensors
    [target, probe, ...] padded to the most probes any target used (``probe_count`` says how many each did).
    ``sampler``: the replacer's, when the caller built it (:func:`sequence_sampler`)."""
    check_params(params)
    if sampler is None:
        sampler = sequence_sampler(model, seq, params, mlm)
    J, W = seq.n_targets, len(seq.ids) - 1
    runs = []
    for j in progress(range(J), desc="ReAGent targets"):
        T = seq.n_prompt + j
        runs.append(reagent_probes(model, seq.context(j), seq.target_id(j), seq.attributable[:T], sampler, params,
                                   draw_key(params.seed, j)))
    P = max(len(r["steps"]) for r in runs)
    nan = float("nan")
    out = {
        "importance": torch.full((J, W), nan),
        "importance_low": torch.full((J, W), nan),
        "importance_high": torch.full((J, W), nan),
        "p_first": torch.full((J, W), nan),
        "tied_first": torch.zeros(J, W, dtype=torch.bool),
        "replaced_count": torch.zeros(J, W, dtype=torch.long),
        "probe_importance": torch.full((J, P, W), nan),
        "probe_drift": torch.full((J, P, W), nan),
        "probe_steps": torch.zeros(J, P, dtype=torch.long),
        "probe_stopped": torch.zeros(J, P, dtype=torch.bool),
        "probe_count": torch.zeros(J, dtype=torch.long),
        "target_probability": torch.zeros(J),
    }
    for j, res in enumerate(runs):
        T, n = seq.n_prompt + j, len(res["steps"])
        out["importance"][j, :T] = res["mean"]
        out["importance_low"][j, :T] = res["low"]
        out["importance_high"][j, :T] = res["high"]
        out["p_first"][j, :T] = res["p_first"]
        out["tied_first"][j, :T] = res["tied_first"]
        out["replaced_count"][j, :T] = res["replaced_count"]
        out["probe_importance"][j, :n, :T] = res["probe_importance"]
        out["probe_drift"][j, :n, :T] = res["drift"].masked_fill(~seq.attributable[:T].cpu(), nan)
        out["probe_steps"][j, :n] = res["steps"]
        out["probe_stopped"][j, :n] = res["stopped"]
        out["probe_count"][j] = n
        out["target_probability"][j] = res["p_orig"]
    return out


LARGE_WORK = 5e6  # token positions through the model in the worst case: about 1 ms each for a 135M model on a CPU


def warn_if_costly(model, seq, config: ReagentConfig) -> float:
    """Say before starting when a run could be long: its worst case is every probe of every target running all
    ``max_steps`` steps, each a forward pass over the target's context. Returns that many token positions."""
    contexts = sum(seq.n_prompt + j for j in range(seq.n_targets))
    probes = config.max_probes if config.adaptive else config.n_probes
    work = float(probes * config.max_steps * contexts)
    if work > LARGE_WORK and model.device.type == "cpu":
        warnings.warn(
            f"ReAGent on {seq.n_prompt} prompt tokens x {seq.n_targets} target(s): up to {probes} probes x "
            f"{config.max_steps} steps over contexts of up to {seq.n_prompt + seq.n_targets - 1} tokens, about "
            f"{work:.2g} token positions through {model.name} on the CPU, which can take hours (early stopping "
            "usually ends far sooner); shorten the prompt, lower max_steps / n_probes, or use a GPU",
            stacklevel=4)
    return work


def warn_if_check_keeps_everything(seq, config: ReagentParams) -> None:
    """Say when the stopping check keeps every attributable position: it then replaces nothing, passes at once for a
    target the model already ranks in its top ``stop_top_k``, every probe stops after one update step, and the
    importance is mostly each probe's random start (measured: on 4-7 token prompts of SmolLM2-135M it does not
    correlate with the exact estimand, benchmarks/reagent_trust.py mu)."""
    n_attr = int(seq.attributable[: seq.n_prompt].sum())
    keep = config.keep_top_n or math.ceil(config.keep_ratio * n_attr)
    if keep >= n_attr:
        warnings.warn(
            f"ReAGent's stopping check keeps the top {keep} positions and the prompt has only {n_attr} attributable "
            "tokens: the check replaces nothing, so probes stop after one step and the importance is mostly noise; "
            f"lower keep_top_n below {n_attr} (or use a longer prompt)", stacklevel=4)


def compute_reagent(model: HookedSource, config: ReagentConfig, mlm: MaskedLM | None = None) -> "ReagentResult":
    model.require_finite_weights()
    check_params(config)
    seq = prepare(model, config.prompt, config.target, max_new_tokens=config.max_new_tokens, prepend_bos=config.prepend_bos,
                  messages=config.messages)
    warn_if_costly(model, seq, config)
    warn_if_check_keeps_everything(seq, config)
    sampler = sequence_sampler(model, seq, config, mlm)
    fallback = [p for p in sampler.fallback if bool(seq.attributable[p])]
    if fallback:
        tokens, tags = model.to_str_tokens(seq.ids.tolist()), sampler.tags or ()
        warnings.warn(
            f"replacer='pos': no other vocabulary token shares the part-of-speech class of "
            f"{', '.join(f'{tokens[p]!r} ({tags[p]})' for p in fallback)}; "
            "those positions are replaced by uniform draws from the vocabulary (the result's meta "
            "'replacer_fallback' lists them)", stacklevel=3)
    tensors = reagent_sequence(model, seq, config, mlm, sampler)
    dtype = probe_dtype(model, config) or str(model.dtype).removeprefix("torch.")
    return attribution_result(ReagentResult, model, config, seq, "reagent", tensors,
                              {"probe_dtype": dtype, **replacer_meta(sampler, seq)})


class ReagentResult(AttributionResult):
    """ReAGent attribution. Tensors: ``importance`` [target, pos] (the config's ``reading``: each position's mean
    score gain over the update steps that replaced it, or the mean softmax score over probes; NaN outside
    each target's context and at special tokens), its 95% interval ``importance_low`` / ``importance_high``,
    ``replaced_count`` [target, pos] (update steps that replaced each position), ``p_first`` (probability of ranking first) and ``tied_first`` (not distinguishable
    from the leader) [target, pos] (see :mod:`.uncertainty`), ``probe_importance`` and ``probe_drift`` (mean
    score change per step) [target, probe, pos], ``probe_steps`` / ``probe_stopped`` [target, probe] (padded
    past ``probe_count`` [target], the probes each target used), ``target_probability`` [target]."""

    analysis = "reagent"
    title = "ReAGent attribution"
    config_cls = ReagentConfig

    @property
    def probe_importance(self) -> ProbeImportance:
        return self.tensors["probe_importance"]

    @property
    def probe_steps(self) -> ProbeSteps:
        """Steps each probe ran before its stopping check succeeded (or ``max_steps``)."""
        return self.tensors["probe_steps"]

    @property
    def probe_stopped(self) -> ProbeStopped:
        """Whether each probe stopped before ``max_steps``."""
        return self.tensors["probe_stopped"]

    @property
    def probe_dtype(self) -> str | None:
        """The dtype the probe forwards ran in (None in results saved before it was recorded)."""
        return self.meta.get("probe_dtype")

    @property
    def probe_count(self) -> Tensor:
        """Probes each target used [target] (an adaptive run adds batches until the top-1 is settled)."""
        if "probe_count" in self.tensors:
            return self.tensors["probe_count"]
        return torch.full((self.probe_steps.shape[0],), self.probe_steps.shape[1], dtype=torch.long)

    def _used(self) -> Tensor:
        return torch.arange(self.probe_steps.shape[1])[None] < self.probe_count[:, None]

    def tied_first(self, target: int = 0) -> list[int]:
        """Context positions tied for first for target ``target`` (the leader alone when it is clear)."""
        if "tied_first" not in self.tensors:
            return [int(self.top_tokens(target, 1)["context_position"][0])]
        return self.tensors["tied_first"][target].nonzero()[:, 0].tolist()

    def summary(self) -> list[tuple[str, str]]:
        lines = super().summary()
        used = self._used()
        stopped = self.probe_stopped[used]
        steps = self.probe_steps[used].float()
        counts = self.probe_count.tolist()
        lines.append(("probes", f"{int(stopped.sum())} of {stopped.numel()} stopped "
                                f"({', '.join(map(str, counts))} per target"
                                + (f", adaptive up to {self.config.max_probes}" if self.config.adaptive else "") + "); "
                                f"steps per probe: median {steps.median():.0f}, max {steps.max():.0f} "
                                f"(max_steps {self.config.max_steps})"
                                + (f"; probe forwards in {self.probe_dtype}" if self.probe_dtype else "")))
        replaced = self.tensors["replaced_count"][self.tensors["importance"].isfinite()] \
            if "replaced_count" in self.tensors else None  # results saved before readings were named have none
        if self.config.reading == "softmax":
            lines.append(("reading", "the mean of softmax(scores) over the stopped probes (the paper's and Inseq's)"))
        elif replaced is not None and replaced.numel():
            lines.append(("reading", "each token's mean score gain over the update steps that replaced it, less the "
                                     f"mean over all steps (replaced in {int(replaced.min())} to {int(replaced.max())} "
                                     "steps)"))
        if "replacer_tags" in self.meta:
            fallback = self.meta.get("replacer_fallback", [])
            tokens = self.meta["tokens"]
            lines.append(("replacer", "same part of speech (each position's tag: meta['replacer_tags'])"
                          + (f"; uniform at {', '.join(repr(tokens[p]) for p in fallback)}: no other token of its "
                             "class" if fallback else "")))
        return lines


ANALYSIS = Analysis(
    name="reagent",
    description="which context tokens made the model produce each generated token (ReAGent, batched)",
    config_cls=ReagentConfig,
    result_cls=ReagentResult,
    compute=compute_reagent,
    in_report=True,
    prepare=resolve_probe_dtype,
)
