"""Baseline attribution methods, each batched over all targets of a sequence.

Every target's context is a prefix of the same sequence and the model is causal, so one
forward over the sequence serves every target: row j of a batch reads its logits at
target j's position. Gradient methods attribute the target's log-probability to the
input embeddings; occlusion measures the drop in the target's probability when a token's
embedding is zeroed; attention methods read the attention from the position that predicts
the target.

All functions return importance [target, pos] with NaN outside each target's context and
at special tokens (see :class:`~workbench.analyses.attribution.common.Sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError
from ...models import hook_names
from .common import Sequence, embed, prepare
from .result import AttributionResult, attribution_result, target_probabilities

GRADIENT_METHODS = ("gradient_norm", "input_x_gradient", "integrated_gradients")
ATTENTION_METHODS = ("attention_last", "attention_mean", "attention_rollout")
BASELINES = (*GRADIENT_METHODS, *ATTENTION_METHODS, "occlusion")


@dataclass(frozen=True)
class BaselineParams:
    ig_steps: int = 32  # integrated gradients: alpha steps (midpoint rule), from a zero-embedding baseline
    max_batch_tokens: int = 8192  # tokens per forward (rows x sequence length)


@dataclass(frozen=True)
class AttributeConfig(BaselineParams):
    prompt: str = "The capital of France is"
    method: str = "integrated_gradients"  # one of BASELINES
    target: str | int | None = None  # a token (or text: each token in turn) to attribute; None: generate
    max_new_tokens: int = 3
    prepend_bos: bool | None = None


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


def _input_gradients(model, seq: Sequence, scale: Tensor | None = None, max_tokens: int = 8192):
    """Embeddings [pos, d] and d log p(target_j) / d embeddings, [target (x alpha), pos, d].

    ``scale`` [alpha]: also for embeddings scaled by each alpha (special tokens unscaled).
    """
    ids = seq.ids[:-1]
    E = embed(model, ids).detach()  # [W, d]
    J, W = seq.n_targets, len(ids)
    alphas = scale if scale is not None else torch.ones(1)
    attr = seq.attributable[:W].to(E.device)[:, None]
    rows_target = torch.arange(J).repeat_interleave(len(alphas))  # row = (target, alpha)
    rows_alpha = alphas.repeat(J).to(E)
    grads = []
    per_chunk = max(1, max_tokens // W)
    for start in range(0, len(rows_target), per_chunk):
        rt, ra = rows_target[start:start + per_chunk], rows_alpha[start:start + per_chunk]
        x = torch.where(attr, ra[:, None, None] * E, E).requires_grad_(True)  # [rows, W, d]
        with torch.enable_grad():
            logp = _target_logprobs(model, x, seq, rt)
            (g,) = torch.autograd.grad(logp.sum(), x)  # rows are independent: per-row gradients
        grads.append(g.detach())
    return E, torch.cat(grads).view(J, len(alphas), W, -1)


def gradient_norm(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """||d log p(target) / d embedding||_2 per context token."""
    _, g = _input_gradients(model, seq, max_tokens=params.max_batch_tokens)
    return _mask_outside(seq, g[:, 0].norm(dim=-1))


def input_x_gradient(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """sum_d embedding * gradient per context token (signed)."""
    E, g = _input_gradients(model, seq, max_tokens=params.max_batch_tokens)
    return _mask_outside(seq, (g[:, 0] * E).sum(-1))


def integrated_gradients(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Integrated gradients from the zero embedding, midpoint rule over ``ig_steps`` alphas (signed)."""
    if params.ig_steps < 1:
        raise InputError("ig_steps must be at least 1")
    alphas = (torch.arange(params.ig_steps) + 0.5) / params.ig_steps
    E, g = _input_gradients(model, seq, alphas, max_tokens=params.max_batch_tokens)
    return _mask_outside(seq, (g.mean(1) * E).sum(-1))


@torch.no_grad()
def occlusion(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Leave-one-out: p(target) - p(target | that token's embedding zeroed), all tokens in one batch."""
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
    names = [hook_names.attn_pattern(layer) for layer in range(model.info.n_layers)]
    _, cache = model.run_with_cache(seq.ids[None, :-1], names=names)
    return torch.stack([cache[n][0].float().mean(0) for n in names]).cpu()  # [layer, q, k]


def _attention_rows(seq: Sequence, maps: Tensor) -> Tensor:
    J = seq.n_targets
    return maps[..., seq.n_prompt - 1 + torch.arange(J), :]  # [..., target, key]


def attention_last(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Last layer's attention from the predicting position, mean over heads."""
    return _mask_outside(seq, _attention_rows(seq, attention_maps(model, seq)[-1]))


def attention_mean(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Attention from the predicting position, mean over heads and layers."""
    return _mask_outside(seq, _attention_rows(seq, attention_maps(model, seq).mean(0)))


def attention_rollout(model, seq: Sequence, params: BaselineParams = BaselineParams()) -> Tensor:
    """Abnar & Zuidema's rollout: product over layers of 0.5 A + 0.5 I (rows renormalised)."""
    maps = attention_maps(model, seq).double()  # [layer, W, W]
    eye = torch.eye(maps.shape[-1], dtype=maps.dtype)
    mixed = 0.5 * maps + 0.5 * eye
    mixed = mixed / mixed.sum(-1, keepdim=True)
    rollout = eye
    for layer_map in mixed:  # later layers multiply on the left
        rollout = layer_map @ rollout
    return _mask_outside(seq, _attention_rows(seq, rollout.float()))


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
    """A baseline attribution (gradient, attention or occlusion); same layout as ReAGent's result."""

    analysis = "attribution"
    title = "Attribution (baseline method)"
    config_cls = AttributeConfig


def compute_attribution(model, config: AttributeConfig) -> BaselineResult:
    model.require_finite_weights()
    seq = prepare(model, config.prompt, config.target, max_new_tokens=config.max_new_tokens, prepend_bos=config.prepend_bos)
    tensors = {"importance": baseline_importance(model, seq, config.method, config),
               "target_probability": target_probabilities(model, seq)}
    return attribution_result(BaselineResult, model, config, seq, config.method, tensors)
