"""Baseline attribution methods, each batched over all targets of a sequence.

Every target's context is a prefix of the same sequence and the model is causal, so one
forward over the sequence serves every target: row j of a batch reads its logits at
target j's position. Gradient methods attribute the target's log-probability to the
input embeddings; occlusion measures the drop in the target's probability when a token's
embedding is zeroed; attention methods read the attention from the position that predicts
the target.

All functions return importance [target, pos] with NaN outside each target's context and
at special tokens (see :class:`~workbench.analyses.attribution.common.Sequence`).

Each was checked per token against its Captum 0.9 counterpart with the same definition, and against
Inseq 0.7.1's method of the same name with Inseq's defaults (``benchmarks/attribution_baselines.py``):
our gradient, IG and occlusion values equal Captum's to float32 round-off, the attention methods equal
HF's ``output_attentions`` and a from-scratch rollout; where Inseq's defaults differ, the docstring
says how.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ...engine.registry import Analysis
from ...errors import InputError
from ...models import hook_names as hn
from .chat import Messages
from .common import Sequence, embed, prepare
from .result import AttributionResult, attribution_result, target_probabilities
from ...models.contract import HookedSource

GRADIENT_METHODS = ("gradient_norm", "input_x_gradient", "integrated_gradients")
ATTENTION_METHODS = ("attention_last", "attention_mean", "attention_rollout")
BASELINES = (*GRADIENT_METHODS, *ATTENTION_METHODS, "occlusion")
IG_BASELINES = ("zero", "unk")


@dataclass(frozen=True)
class BaselineParams:
    ig_steps: int = 32  # integrated gradients: alpha steps (midpoint rule)
    ig_baseline: str = "unk"  # integrated gradients' baseline: the "unk" token's embedding (Inseq's) or "zero"
    max_batch_tokens: int = 8192  # tokens per forward (rows x sequence length)


@dataclass(frozen=True)
class AttributeConfig(BaselineParams):
    prompt: str = "The capital of France is"
    method: str = "integrated_gradients"  # one of BASELINES
    target: str | int | None = None  # a token (or text: each token in turn) to attribute; None: generate
    max_new_tokens: int = 3
    prepend_bos: bool | None = None
    messages: Messages | None = None  # a chat instead of prompt: (role, content) pairs, see chat.py


def _mask_outside(seq: Sequence, scores: Float[Tensor, "target pos"]) -> Tensor:
    """NaN where position >= the target's context length or the token is special."""
    J, W = scores.shape
    pos = torch.arange(W)
    ctx_len = seq.n_prompt + torch.arange(J)
    outside = (pos[None] >= ctx_len[:, None]) | ~seq.attributable[:W].cpu()[None]
    return scores.detach().float().cpu().masked_fill(outside, float("nan"))


def _target_logprobs(model, embeds: Float[Tensor, "rows pos d_model"], seq: Sequence, rows_target: Tensor) -> Tensor:
    """log p(target) for each row; row r is read at the position predicting target ``rows_target[r]``."""
    J = seq.n_targets
    logits = model.logits(inputs_embeds=embeds, keep=J)  # [rows, J, vocab]: positions n_prompt-1 ...
    logp = torch.log_softmax(logits.float(), -1)
    targets = seq.ids[seq.n_prompt:].to(logp.device)[rows_target.to(logp.device)]
    return logp[torch.arange(len(rows_target)), rows_target.to(logp.device), targets]


def baseline_embedding(model, kind: str) -> Tensor:
    """IG's baseline for one token [d]: the zero vector, or the embedding of the tokenizer's unknown token
    (Inseq's default; pad, then EOS when there is none)."""
    if kind not in IG_BASELINES:
        raise InputError(f"ig_baseline must be one of {', '.join(IG_BASELINES)}, got {kind!r}")
    tok = model.tokenizer
    ids = [i for i in (tok.unk_token_id, tok.pad_token_id, tok.eos_token_id) if i is not None]
    one = embed(model, torch.tensor(ids[:1] or [0], device=model.device))[0].detach()
    return torch.zeros_like(one) if kind == "zero" or not ids else one


def _input_gradients(model, seq: Sequence, scale: Tensor | None = None, max_tokens: int = 8192,
                     base: Tensor | None = None):
    """Embeddings [pos, d], the path's start [pos, d] and d log p(target_j) / d embeddings, [target (x alpha), pos, d].

    ``scale`` [alpha]: also at base + alpha (embedding - base) for each alpha (special tokens stay put);
    ``base`` [d]: the baseline token embedding (default zero).
    """
    ids = seq.ids[:-1]
    E = embed(model, ids).detach()  # [W, d]
    J, W = seq.n_targets, len(ids)
    alphas = scale if scale is not None else torch.ones(1)
    attr = seq.attributable[:W].to(E.device)[:, None]
    B = torch.where(attr, torch.zeros_like(E) if base is None else base.to(E).expand_as(E), E)
    rows_target = torch.arange(J).repeat_interleave(len(alphas))  # row = (target, alpha)
    rows_alpha = alphas.repeat(J).to(E)
    grads = []
    per_chunk = max(1, max_tokens // W)
    for start in range(0, len(rows_target), per_chunk):
        rt, ra = rows_target[start:start + per_chunk], rows_alpha[start:start + per_chunk]
        x = (B + ra[:, None, None] * (E - B)).requires_grad_(True)  # [rows, W, d]
        with torch.enable_grad():
            logp = _target_logprobs(model, x, seq, rt)
            (g,) = torch.autograd.grad(logp.sum(), x)  # rows are independent: per-row gradients
        grads.append(g.detach())
    return E, B, torch.cat(grads).view(J, len(alphas), W, -1)


def gradient_norm(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """||d log p(target) / d embedding||_2 per context token.

    = Captum ``Saliency`` on log p(target) with the L2 norm over the hidden dimension. Inseq's
    ``saliency`` attributes p(target) (its gradient is p times ours) and aggregates with the same L2
    norm ("vnorm"): the same ranking, scaled by p(target) (Spearman 1.0 on the checked prompts).
    """
    _, _, g = _input_gradients(model, seq, max_tokens=params.max_batch_tokens)
    return _mask_outside(seq, g[:, 0].norm(dim=-1))


def input_x_gradient(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """sum_d embedding * gradient of log p(target), per context token (signed).

    = Captum ``InputXGradient`` summed over the hidden dimension. Inseq's ``input_x_gradient``
    aggregates the per-dimension products with their L2 norm instead (unsigned: a token that lowers
    the target scores as high as one that raises it) and attributes p(target): its ranking differs
    (Spearman -0.26 / -0.36 against ours on the password / Eiffel prompts).
    """
    E, _, g = _input_gradients(model, seq, max_tokens=params.max_batch_tokens)
    return _mask_outside(seq, (g[:, 0] * E).sum(-1))


def integrated_gradients(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Integrated gradients of log p(target), midpoint rule over ``ig_steps`` alphas, summed over the
    hidden dimension (signed), from a baseline where every attributable token is the UNK token's
    embedding (``ig_baseline="unk"``, Inseq's default; pad or EOS without one) or zero (``"zero"``).
    Special tokens (BOS) keep their embedding on the whole path: they are context, never attributed.
    Completeness: the sum over tokens is log p(target | x) - log p(target | baseline) up to the
    Riemann error.

    Why not zero by default: in a pre-norm model the first block normalises each embedding, so on the
    path alpha x embedding it sees the same token for every alpha not near 0; the path then probes
    the residual stream's scale more than the tokens' identity. On copy tasks of the embedded
    SmolLM2-135M the earlier mention of the word came first for 28% (no BOS) / 54% (BOS) of 50
    words from zero, against 80% / 95% of 20 words from UNK (benchmarks/attribution_baselines.py).

    = Captum ``IntegratedGradients(method="riemann_middle")`` with that baseline. Inseq's
    ``integrated_gradients`` differs otherwise: p(target) instead of log p, 50 Gauss-Legendre steps,
    L2 aggregation over the hidden dimension (unsigned).
    """
    if params.ig_steps < 1:
        raise InputError("ig_steps must be at least 1")
    alphas = (torch.arange(params.ig_steps) + 0.5) / params.ig_steps
    base = baseline_embedding(model, params.ig_baseline)
    E, B, g = _input_gradients(model, seq, alphas, max_tokens=params.max_batch_tokens, base=base)
    return _mask_outside(seq, (g.mean(1) * (E - B)).sum(-1))


@torch.no_grad()
def occlusion(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Leave-one-out: p(target) - p(target | that token's embedding zeroed), all tokens in one batch.

    = Captum ``FeatureAblation`` (or ``Occlusion`` with a 1 x d_model window) on p(target) with a
    zero baseline, one feature per token. A probability drop saturates at p(target): every token
    whose removal destroys the prediction gets p(target) exactly, so ties at the top are expected
    (on "The password is falcon. Remember it well. The password is" without BOS, zeroing any of
    'The', ' password', ' is', ' falcon' takes p(' falcon') from 0.313 to < 1e-3: four ties at
    0.313; SmolLM2's first token is also its attention sink). Inseq's ``occlusion`` replaces the token
    by the UNK embedding instead, for SmolLM2 ``<|endoftext|>``, a document boundary: almost every
    token then saturates.
    """
    ids = seq.ids[:-1]
    E = embed(model, ids)  # [W, d]
    J, W = seq.n_targets, len(ids)
    rows = E.expand(W + 1, W, E.shape[-1]).clone()  # row w zeroes position w; the last row is intact
    rows[torch.arange(W), torch.arange(W)] = 0.0
    per_chunk = max(1, params.max_batch_tokens // W)
    targets = seq.ids[seq.n_prompt:].to(E.device)
    probs = []
    for chunk in rows.split(per_chunk):
        logits = model.logits(inputs_embeds=chunk, keep=J)  # [rows, J, vocab]
        probs.append(torch.softmax(logits.float(), -1)[:, torch.arange(J), targets])  # [rows, J]
    p = torch.cat(probs)  # [W + 1, J]
    drop = p[-1][None] - p[:-1]  # [W, J]
    return _mask_outside(seq, drop.T)


@torch.no_grad()
def attention_maps(model, seq: Sequence) -> Float[Tensor, "layer query key"]:
    """Head-averaged attention of every layer over the sequence (query = the position predicting a token)."""
    names = [hn.attn_pattern(layer) for layer in range(model.facts.n_layers)]
    _, cache = model.run_with_cache(seq.ids[None, :-1], names=names)
    return torch.stack([cache[n][0].float().mean(0) for n in names]).cpu()  # [layer, q, k]


def _attention_rows(seq: Sequence, maps: Tensor) -> Tensor:
    J = seq.n_targets
    return maps[..., seq.n_prompt - 1 + torch.arange(J), :]  # [..., target, key]


def attention_last(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Last layer's attention from the predicting position, mean over heads (= HF ``output_attentions``)."""
    return _mask_outside(seq, _attention_rows(seq, attention_maps(model, seq)[-1]))


def attention_mean(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Attention from the predicting position, mean over heads and layers.

    = Inseq's ``attention`` with its default aggregation (mean over layers, then heads)."""
    return _mask_outside(seq, _attention_rows(seq, attention_maps(model, seq).mean(0)))


def rollout(maps: Float[Tensor, "layer query key"]) -> Float[Tensor, "query key"]:
    """Abnar & Zuidema 2020: R = prod_l norm_rows(0.5 A_l + 0.5 I), later layers on the left (float64)."""
    maps = maps.double()
    eye = torch.eye(maps.shape[-1], dtype=maps.dtype)
    mixed = 0.5 * maps + 0.5 * eye
    mixed = mixed / mixed.sum(-1, keepdim=True)
    out = eye
    for layer_map in mixed:
        out = layer_map @ out
    return out


def attention_rollout(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Abnar & Zuidema's attention rollout from the predicting position (heads averaged per layer).

    Equal to a from-scratch rollout of HF's ``output_attentions`` (no Captum / Inseq counterpart). It
    measures how attention mass flows back through the layers, and on models with an attention sink
    almost all of it ends at the sink: on SmolLM2-135M (30 layers) the first position (BOS, or the
    first word without BOS) gets > 0.9999 and every other token ~1e-6, so with BOS (never attributed)
    all shown values round to 0.0. Their order is still defined, but rollout says little here.
    """
    return _mask_outside(seq, _attention_rows(seq, rollout(attention_maps(model, seq)).float()))


METHODS = {
    "gradient_norm": gradient_norm,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "attention_last": attention_last,
    "attention_mean": attention_mean,
    "attention_rollout": attention_rollout,
    "occlusion": occlusion,
}


def baseline_importance(model, seq: Sequence, method: str, params: BaselineParams = BaselineParams()) -> Tensor:
    if method not in METHODS:
        raise InputError(f"unknown attribution method {method!r}; choose one of reagent, {', '.join(METHODS)}")
    return METHODS[method](model, seq, params)


class BaselineResult(AttributionResult):
    """A baseline attribution (gradient, attention or occlusion); same layout as ReAGent's result.

    Its analysis is named ``"attribution"`` (what ``wb.attribute(method=...)`` and ``workbench attribute --method``
    run for every method but ReAGent): cached and saved results are found by that name, so it stays."""

    analysis = "attribution"
    title = "Attribution (baseline method)"
    config_cls = AttributeConfig


def compute_attribution(model: HookedSource, config: AttributeConfig) -> BaselineResult:
    model.require_finite_weights()
    seq = prepare(model, config.prompt, config.target, max_new_tokens=config.max_new_tokens, prepend_bos=config.prepend_bos,
                  messages=config.messages)
    tensors = {"importance": baseline_importance(model, seq, config.method, config),
               "target_probability": target_probabilities(model, seq)}
    return attribution_result(BaselineResult, model, config, seq, config.method, tensors)


def check_method(model, config: AttributeConfig) -> AttributeConfig:
    """``prepare``: an unknown method is refused before any work (and before a cache key is made for it)."""
    if config.method not in METHODS:
        raise InputError(f"unknown attribution method {config.method!r}; choose one of reagent, {', '.join(METHODS)}")
    return config


ANALYSIS = Analysis(
    name="attribution",
    description="gradient norm, input x gradient, integrated gradients, attention, rollout, occlusion",
    config_cls=AttributeConfig,
    result_cls=BaselineResult,
    compute=compute_attribution,
    in_report=False,
    prepare=check_method,
)
