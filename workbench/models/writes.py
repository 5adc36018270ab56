"""What each sublayer really reads from and writes into the residual stream, per family.

Reading side: a sublayer reads ``norm(x)``; its gain (``offset + w``, Gemma's ``1 + w`` included)
scales the rows of the matrices that read (W_Q, W_K, W_V, W_in, W_gate). Query / key norms
(Qwen3, Gemma 3, OLMo 2) scale the columns of W_Q and W_K the same way.

Writing side: a sublayer's output ``o`` joins the residual as ``m * post_norm(o)`` — ``post_norm``
only in sandwich / post-norm families (Gemma 2/3, OLMo 2), ``m`` the residual multiplier (Granite).
The weight-only form folds the post-norm's gain and ``m`` into the columns of W_O / W_out (the
per-position ``1 / rms(o)`` cannot be folded and is left out: normalised scores do not see it).
The activation form is exact: a post-norm is linear once its per-position scale is measured, so
the write splits over heads, ``write_h = m * g * center(z_h W_O[h]) / scale``, and the parts sum to
the measured write (asserted for every family in the tests).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import UnsupportedModelError
from . import hook_names as hn
from .weights import AttentionWeights, MLPWeights


def require_additive_residual(model) -> None:
    """Decompositions of the residual stream need blocks that add their writes to the stream they read."""
    if model.facts.residual_from_norm:
        raise UnsupportedModelError(
            f"{model.name}'s blocks add their writes to the normed stream (apply_residual_connection_post_layernorm), "
            "so the residual stream is not a sum of writes; use the weight analyses (wb.head_composition) or "
            "wb.reagent instead")


def _scale_rows(w: Tensor, gain: Tensor | None) -> Tensor:
    return w if gain is None else w * gain.to(w.dtype)[:, None]  # [.., d_in, d_out]: row i scaled by gain[i]


def _scale_cols(w: Tensor | None, gain: Tensor | float | None) -> Tensor | None:
    if w is None or gain is None:
        return w
    return w * (gain.to(w.dtype) if isinstance(gain, Tensor) else gain)


def write_gain(model, layer: int, sublayer: str) -> Tensor | float:
    """What multiplies each output channel of a sublayer on its way into the residual (weight-only form)."""
    gain = model.output_norm_gain(layer, sublayer)
    m = model.facts.residual_multiplier
    return m if gain is None else gain * m


def _centre_heads(w: Tensor | None) -> Tensor | None:
    """``w`` [.., d_head] with each head's mean over d_head taken out (a head-wise LayerNorm's centring)."""
    return None if w is None else w - w.mean(-1, keepdim=True)


def effective_attention(model, layer: int, *, fold_input_norm: bool = True) -> AttentionWeights:
    """The layer's attention weights as they act on the residual stream (see the module docstring)."""
    raw = model.attention_weights(layer)
    gain = model.norm_gain(layer, "attn") if fold_input_norm else None
    wq, wk, wv = (_scale_rows(w, gain) for w in (raw.W_Q, raw.W_K, raw.W_V))  # rows: d_model
    bq, bk = raw.b_Q, raw.b_K
    qk = model.qk_norm_gains(layer)
    if qk is not None and model.facts.attention.qk_norm_centred:  # a LayerNorm's centring is a projection: fold it
        wq, wk = wq - wq.mean(-1, keepdim=True), wk - wk.mean(-1, keepdim=True)
        bq, bk = _centre_heads(bq), _centre_heads(bk)
    if qk is not None:  # the query / key norm's gain scales each head's d_head columns
        gq, gk = qk
        wq, wk = wq * gq[:, None, :].to(wq.dtype), wk * gk[:, None, :].to(wk.dtype)
        bq, bk = _scale_cols(bq, gq), _scale_cols(bk, gk)
    out = write_gain(model, layer, "attn")
    return replace(raw, W_Q=wq, W_K=wk, W_V=wv, b_Q=bq, b_K=bk, W_O=_scale_cols(raw.W_O, out),
                   b_O=_scale_cols(raw.b_O, out))


def effective_mlp(model, layer: int, *, fold_input_norm: bool = True) -> MLPWeights:
    """The layer's MLP weights as they act on the residual stream (dense MLPs; experts: ``expert_weights``)."""
    raw = model.mlp_weights(layer)
    gain = model.norm_gain(layer, "mlp") if fold_input_norm else None
    out = write_gain(model, layer, "mlp")
    return replace(raw, W_in=_scale_rows(raw.W_in, gain), W_gate=_scale_rows(raw.W_gate, gain) if raw.W_gate is not None
                   else None, W_out=_scale_cols(raw.W_out, out), b_out=_scale_cols(raw.b_out, out))


def own_output_name(model, layer: int, sublayer: str) -> str:
    """Hook carrying the sublayer's own output (``z W_O + b_O``, ``mlp_post W_out + b_out``), before any output
    norm or residual multiplier. The inner hooks are used only where the write differs from it: some bridges
    (BLOOM) add the residual inside the sublayer, so there the inner hook is not the output."""
    if model.facts.post_norms or model.facts.residual_multiplier != 1:
        return hn.attn_raw_out(layer) if sublayer == "attn" else hn.mlp_raw_out(layer)
    return hn.attn_out(layer) if sublayer == "attn" else hn.mlp_out(layer)


def head_write_names(model, layer: int) -> list[str]:
    """The activations :func:`head_writes` needs."""
    names = [hn.attn_z(layer)]
    if model.facts.post_norms:
        names.append(own_output_name(model, layer, "attn"))
    return names


def _post_norm_map(model, layer: int, sublayer: str, acts: dict[str, Tensor]):
    """The post-norm as a linear map of one part at each position, and its constant term [b, pos, d]."""
    facts = model.facts
    m = facts.residual_multiplier
    if not facts.post_norms:
        return (lambda t: m * t), None
    x = acts[own_output_name(model, layer, sublayer)].float()  # [b, pos, d]: the whole sublayer output
    if facts.norm == "rms":
        center = lambda t: t  # noqa: E731
        scale = (x.square().mean(-1, keepdim=True) + facts.norm_eps).sqrt()
    else:
        center = lambda t: t - t.mean(-1, keepdim=True)  # noqa: E731
        scale = (x.var(-1, unbiased=False, keepdim=True) + facts.norm_eps).sqrt()
    gain = model.output_norm_gain(layer, sublayer)
    gain = 1.0 if gain is None else gain.float()
    bias = model.norm_bias(layer, sublayer, post=True)
    const = None if bias is None else m * bias.float().expand_as(x)

    def apply(t: Tensor) -> Tensor:  # t [b, pos, ..., d]: extra dims (heads) broadcast over the scale
        s = scale.reshape(scale.shape[:2] + (1,) * (t.ndim - 3) + (1,))
        return m * gain * center(t) / s

    return apply, const


def head_writes(model, layer: int, acts: dict[str, Tensor]) -> tuple[
        Float[Tensor, "batch pos head d_model"], Float[Tensor, "batch pos d_model"]]:
    """Each head's exact write into the residual stream, and the rest (output bias, norm bias).

    ``acts``: the activations named by :func:`head_write_names` for one forward pass. The heads'
    writes plus the rest equal the activation at ``hook_attn_out`` (to float rounding)."""
    require_additive_residual(model)
    w = model.attention_weights(layer)
    z = acts[hn.attn_z(layer)].float()  # [b, pos, head, d_head]
    per_head = torch.einsum("bphd,hde->bphe", z, w.W_O.float())
    apply, const = _post_norm_map(model, layer, "attn", acts)
    heads = apply(per_head)
    rest = torch.zeros_like(heads[:, :, 0])
    if w.b_O is not None:
        rest = rest + apply(w.b_O.float().expand_as(rest))
    if const is not None:
        rest = rest + const
    return heads, rest


def expert_writes(model, layer: int, x: Tensor) -> tuple[
        Float[Tensor, "token expert d_model"], Float[Tensor, "token d_model"], Float[Tensor, "token expert"],
        Float[Tensor, "token expert d_ff"]]:
    """A mixture-of-experts layer's write, split over its experts, from its normed input ``x`` [token, d_model].

    Returns (per-expert writes, the shared expert's write (zeros without one), routing weights (0 for experts
    not chosen), each expert's hidden activation). The writes sum to the layer's measured write
    (``hook_mlp_out``; asserted in the tests)."""
    w = model.expert_weights(layer)
    x = x.float()
    routing = w.routing(x)
    hidden = w.hidden(x, model.mlp_activation)  # [token, expert, d_ff]
    m = model.facts.residual_multiplier
    out = torch.einsum("tef,efd->ted", hidden, w.W_out.float())
    if w.b_out is not None:
        out = out + w.b_out.float()
    per_expert = m * routing[..., None] * out
    shared = torch.zeros_like(x)
    if w.shared is not None:
        s = w.shared
        out = (model.mlp_activation(x @ s.W_gate.float()) * (x @ s.W_in.float())) @ s.W_out.float()
        gate = torch.sigmoid(x @ w.W_shared_gate.float()) if w.W_shared_gate is not None else 1.0
        shared = m * gate * out
    return per_expert, shared, routing, hidden
