"""The identities of the load-time self-check (:mod:`workbench.models.selfcheck`), each measured on one layer
from the activations of one forward pass: what the model computed against what the workbench's facts and
weight accessors say it computes. Each returns the relative error of the reconstruction."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from . import hook_names as hn
from .weights import AttentionWeights


def rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()  # a scalar from a graph would warn
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Reads:
    """Each layer's raw and effective attention weights, read once for all the identities that use them (the
    last layer's only are kept: the identities go layer by layer)."""

    def __init__(self, model):
        self.model = model
        self._raw: dict[int, AttentionWeights] = {}
        self._effective: dict[int, AttentionWeights] = {}

    def raw(self, layer: int) -> AttentionWeights:
        if layer not in self._raw:
            self._raw = {layer: self.model.attention_weights(layer)}
        return self._raw[layer]

    def effective(self, layer: int) -> AttentionWeights:
        if layer not in self._effective:
            self._effective = {layer: self.model.effective_attention_weights(layer)}
        return self._effective[layer]


def normed(layer: int, which: str) -> str:
    return f"blocks.{layer}.attn.hook_{which}_normed"


def own(model, layer: int, sublayer: str) -> str | None:
    try:
        return model.own_output_name(layer, sublayer)
    except UnsupportedModelError:
        return None


def residual(model, acts, l: int) -> float:
    added = acts[hn.resid_post(l)] - acts[hn.resid_pre(l)]
    return rel(acts[hn.attn_out(l)] + acts[hn.mlp_out(l)], added)


def head_writes(model, acts, l: int) -> float:
    heads, rest = model.head_writes(l, acts)
    return rel(heads.sum(2) + rest, acts[hn.attn_out(l)])


def normalise(model, x: Tensor) -> Tensor:
    """``x`` through a norm without its gain and bias: ``x / rms(x)`` (RMS) or ``(x - mean) / std`` (LayerNorm)."""
    if model.facts.norm != "rms":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + model.facts.norm_eps)


def qkv(model, reads: Reads, acts, l: int) -> float:
    """Queries, keys and values from the residual stream through the effective matrices, against the hooks."""
    x = acts[hn.resid_pre(l)]
    raw, eff = reads.raw(l), reads.effective(l)
    ln_bias = None
    if model.facts.pre_norms:
        x = normalise(model, x)
        ln_bias = model.norm_bias(l, "attn")
    gain = model.norm_gain(l, "attn") if model.facts.pre_norms else None
    qk = model.qk_norm_gains(l)
    if model.facts.attention.qk_norm and qk is None:
        raise UnsupportedModelError("the model has query / key norms whose gains the hooked model does not expose")
    errors = []
    for which, w_eff, w_raw, b_eff, b_raw in (("q", eff.W_Q, raw.W_Q, eff.b_Q, raw.b_Q),
                                              ("k", eff.W_K, raw.W_K, eff.b_K, raw.b_K),
                                              ("v", eff.W_V, raw.W_V, eff.b_V, raw.b_V)):
        cols = qk[0 if which == "q" else 1].float() if qk is not None and which != "v" else None
        got = project(x, w_eff, ln_bias, w_raw if cols is None else w_raw * cols[:, None, :], b_eff)
        hook = {"q": hn.attn_q(l), "k": hn.attn_k(l), "v": hn.attn_v(l)}[which]
        if cols is not None:  # the q/k norm's gain is folded into the matrix; its per-position scale is measured
            rows = w_raw if gain is None else w_raw * gain.to(w_raw.dtype)[:, None]
            got = got / qk_scale(model, project(x, rows, ln_bias, w_raw, b_raw))
            hook = normed(l, which)
        errors.append(rel(got, per_head(acts[hook], got.shape)))
        rotated = {"q": hn.attn_q(l, rotated=True), "k": hn.attn_k(l, rotated=True)}.get(which)
        if rotated in acts:  # rotary keeps each head's vector length (up to YaRN's one factor): a q/k norm left out shows
            errors.append(up_to_scale(got.norm(dim=-1), per_head(acts[rotated], got.shape).norm(dim=-1)))
    return max(errors)


def mixed_values(reads: Reads, acts, l: int) -> tuple[Tensor, Tensor]:
    """(the pattern [b, head, q, k] applied to the values, the measured head outputs), both [b, pos, head, d_head]."""
    raw = reads.raw(l)
    z = acts[hn.attn_z(l)]
    v = per_head(acts[hn.attn_v(l)], torch.Size((*z.shape[:2], raw.W_V.shape[0], raw.W_V.shape[-1])))
    v = v.repeat_interleave(raw.W_Q.shape[0] // raw.W_V.shape[0], dim=2)  # shared K/V heads, per query head
    mixed = torch.einsum("bhqk,bkhd->bqhd", acts[hn.attn_pattern(l)], v)
    return mixed, z.reshape(mixed.shape)


def values_mixed(reads: Reads, acts, l: int) -> float:
    mixed, z = mixed_values(reads, acts, l)
    scale = (mixed * z).sum(-1, keepdim=True) / mixed.square().sum(-1, keepdim=True).clamp_min(1e-30)
    return rel(scale * mixed, z)


def pattern(reads: Reads, acts, l: int) -> float:
    return rel(*mixed_values(reads, acts, l))


def up_to_scale(a: Tensor, b: Tensor) -> float:
    """Relative error of ``a`` as ``b`` after the one scale that fits best."""
    a, b = a.double(), b.double()
    return rel(a * (a * b).sum() / a.square().sum().clamp_min(1e-30), b)


def per_head(t: Tensor, shape: torch.Size) -> Tensor:
    """A hooked query / key / value as [batch, pos, head, d_head]: some bridges give [batch, head, pos, d_head]
    after the q/k norm (the probe's length never equals a head count, so the layouts cannot be confused)."""
    if t.ndim == 4 and t.shape[1] != shape[1]:
        t = t.transpose(1, 2)
    return t.reshape(shape)


def project(x: Tensor, w: Tensor, ln_bias: Tensor | None, w_bias: Tensor, b: Tensor | None) -> Tensor:
    """``x w`` per head [b, pos, head, d_head], plus a LayerNorm bias through ``w_bias`` and the projection bias."""
    out = torch.einsum("bpd,hde->bphe", x, w.float())
    if ln_bias is not None:
        out = out + torch.einsum("d,hde->he", ln_bias.float(), w_bias.float())
    if b is not None:
        out = out + b.float().reshape(out.shape[-2:])
    return out


def qk_scale(model, t: Tensor) -> Tensor:
    """The q/k norm's per-position (and per-head, for a head-wise norm) RMS of ``t`` [b, pos, head, d_head]."""
    eps = model.facts.qk_norm_eps
    if model.facts.attention.qk_norm_centred:
        t = t - t.mean(-1, keepdim=True)
    if model.facts.attention.qk_norm == "full":
        return (t.square().mean((-2, -1), keepdim=True) + eps).sqrt()
    return (t.square().mean(-1, keepdim=True) + eps).sqrt()


def attn_write(model, reads: Reads, acts, l: int) -> float:
    eff = reads.effective(l)
    write = torch.einsum("bphd,hde->bpe", acts[hn.attn_z(l)], eff.W_O.float())
    if eff.b_O is not None:
        write = write + eff.b_O.float()
    if model.facts.post_norms:  # the output norm's per-position scale is all the weights cannot hold
        out = acts[model.own_output_name(l, "attn")]
        if model.facts.norm != "rms":
            raise UnsupportedModelError("a LayerNorm on the attention's output is not folded into W_O")
        write = write * torch.rsqrt(out.square().mean(-1, keepdim=True) + model.facts.norm_eps)
    return rel(write, acts[hn.attn_out(l)])


def mlp_read(model, acts, l: int) -> float:
    stream = acts[hn.resid_pre(l) if model.facts.parallel_blocks else hn.resid_mid(l)]
    if not model.facts.pre_norms:
        return rel(stream, acts[hn.mlp_in(l)])
    gain, bias = model.norm_gain(l, "mlp"), model.norm_bias(l, "mlp")
    expected = normalise(model, stream) * (1.0 if gain is None else gain.float())
    if bias is not None:
        expected = expected + bias.float()
    return rel(expected, acts[hn.mlp_in(l)])


def spread(n: int, most: int = 128) -> Tensor:
    """Up to ``most`` channel indices spread evenly over ``n``: a wrong fact (an activation, a fused projection, a
    gain) moves every channel, so a spread sample shows it without copying a big model's whole MLP to float32."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique()


def columns(w: Tensor, cols: Tensor) -> Tensor:
    """``w[:, cols]`` in float32, gathered as rows of ``w.mT``: the workbench's weights are transposed views of
    the stored [out, in] matrices, whose rows are contiguous (indexing the view's columns is ~5x slower)."""
    return w.float() if len(cols) == w.shape[-1] else w.mT[cols].mT.float()


def mlp_in(model, acts, l: int) -> float:
    x, mlp = acts[hn.mlp_in(l)], model.mlp_weights(l)
    cols = spread(mlp.W_in.shape[-1]).to(mlp.W_in.device)
    up = x @ columns(mlp.W_in, cols) + (mlp.b_in[cols].float() if mlp.b_in is not None else 0)
    hidden = model.mlp_activation(up) if mlp.W_gate is None else \
        model.mlp_activation(x @ columns(mlp.W_gate, cols)) * up
    return rel(hidden, acts[hn.mlp_post(l)][..., cols.to(x.device)])


def mlp_write(model, acts, l: int) -> float:
    mlp = model.mlp_weights(l)
    cols = spread(mlp.W_out.shape[-1]).to(mlp.W_out.device)
    own = acts[hn.mlp_post(l)] @ columns(mlp.W_out, cols) + (mlp.b_out[cols].float() if mlp.b_out is not None else 0)
    return rel(own, acts[model.own_output_name(l, "mlp")][..., cols.to(own.device)])


def experts(model, acts, l: int) -> float:
    x = acts[hn.mlp_in(l)].reshape(-1, model.facts.d_model)
    per_expert, shared, _, _ = model.expert_writes(l, x)
    measured = acts[model.own_output_name(l, "mlp")].reshape(-1, model.facts.d_model)
    return rel(per_expert.sum(1) + shared, measured)
