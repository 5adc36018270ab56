"""Raw per-layer and per-head weights in TransformerLens layout (no folding, no centering).

Layouts (x @ W convention, as in TransformerLens):
    W_Q [n_heads, d_model, d_head]      W_K, W_V [n_kv_heads, d_model, d_head]
    W_O [n_heads, d_head, d_model]      W_in, W_gate [d_model, d_mlp]    W_out [d_mlp, d_model]

Grouped-query attention: query head ``h`` reads key/value head ``h // heads_per_kv``
(HF's ``repeat_kv`` order). ``expand_kv`` repeats K/V heads into that per-query-head
layout; it is never applied silently.

Tensors are detached views of the model's parameters: read them freely, ``clone()``
before editing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class AttentionWeights:
    """One layer's attention weights. Biases are ``None`` for bias-free models."""

    W_Q: Float[Tensor, "head d_model d_head"]
    W_K: Float[Tensor, "kv_head d_model d_head"]
    W_V: Float[Tensor, "kv_head d_model d_head"]
    W_O: Float[Tensor, "head d_head d_model"]
    b_Q: Float[Tensor, "head d_head"] | None
    b_K: Float[Tensor, "kv_head d_head"] | None
    b_V: Float[Tensor, "kv_head d_head"] | None
    b_O: Float[Tensor, " d_model"] | None

    @property
    def heads_per_kv(self) -> int:
        return self.W_Q.shape[0] // self.W_K.shape[0]

    def expanded(self) -> "AttentionWeights":
        """The same weights with K/V repeated to one per query head."""
        n = self.heads_per_kv
        return AttentionWeights(
            self.W_Q, expand_kv(self.W_K, n), expand_kv(self.W_V, n), self.W_O,
            self.b_Q, _maybe(expand_kv, self.b_K, n), _maybe(expand_kv, self.b_V, n), self.b_O,
        )


@dataclass(frozen=True)
class MLPWeights:
    """One layer's MLP weights. ``W_gate`` is ``None`` for plain (non-gated) MLPs."""

    W_in: Float[Tensor, "d_model d_mlp"]
    W_gate: Float[Tensor, "d_model d_mlp"] | None
    W_out: Float[Tensor, "d_mlp d_model"]
    b_in: Float[Tensor, " d_mlp"] | None
    b_out: Float[Tensor, " d_model"] | None


def _maybe(fn, tensor, *args):
    return None if tensor is None else fn(tensor, *args)


def expand_kv(weight: Tensor, heads_per_kv: int, head_dim: int = 0) -> Tensor:
    """Repeat each key/value head ``heads_per_kv`` times along ``head_dim`` (HF order)."""
    if heads_per_kv == 1:
        return weight
    return weight.repeat_interleave(heads_per_kv, dim=head_dim)


def kv_head_of(head: int, heads_per_kv: int) -> int:
    """The key/value head that query ``head`` reads."""
    return head // heads_per_kv


def _get(module, name: str) -> Tensor | None:
    try:
        value = getattr(module, name)
    except (AttributeError, ValueError, RuntimeError):
        return None
    return None if value is None else value.detach()


def _required(found: Tensor | None, what: str, bridge) -> Tensor:
    if found is None:
        raise UnsupportedModelError(
            f"TransformerLens exposes no {what} for {bridge.cfg.architecture}; analyses that read "
            "weights need a supported architecture (Llama, Mistral, Qwen, GPT-2, Pythia, ... see `workbench info`)"
        )
    return found


def attention_weights(bridge, layer: int) -> AttentionWeights:
    attn = bridge.blocks[layer].attn
    matrices = [_required(_get(attn, n), f"attention {n}", bridge) for n in ("W_Q", "W_K", "W_V", "W_O")]
    return AttentionWeights(*matrices, *(_get(attn, n) for n in ("b_Q", "b_K", "b_V", "b_O")))


def mlp_weights(bridge, layer: int, gated: bool) -> MLPWeights:
    mlp = bridge.blocks[layer].mlp
    W_in = _required(_get(mlp, "W_in"), "MLP W_in", bridge)
    W_out = _required(_get(mlp, "W_out"), "MLP W_out", bridge)
    if W_in.shape[-1] != W_out.shape[0]:  # e.g. gate and up fused in one projection the bridge does not split
        raise UnsupportedModelError(
            f"layer {layer}'s MLP input projection ({tuple(W_in.shape)}) does not match its output projection "
            f"({tuple(W_out.shape)}): a fused projection the workbench cannot split; use wb.reagent instead")
    return MLPWeights(
        W_in=W_in,
        W_gate=_required(_get(mlp, "W_gate"), "MLP W_gate", bridge) if gated else None,
        W_out=W_out,
        b_in=_get(mlp, "b_in"),
        b_out=_get(mlp, "b_out"),
    )


NORMS = {"attn": "ln1", "mlp": "ln2"}  # which norm sits in front of which sublayer
POST_NORMS = {"attn": "ln1_post", "mlp": "ln2_post"}  # which norm sits on which sublayer's output (sandwich)


def norm_param(bridge, layer: int | None, before: str, name: str = "weight", *, post: bool = False) -> Tensor | None:
    """Stored gain (``name="weight"``) or LayerNorm bias (``"bias"``) of the norm in front of ``layer``'s
    ``before`` sublayer ("attn" / "mlp"), of its output norm (``post=True``), or of the final norm
    (``layer=None``); None when the architecture has none."""
    if layer is None:
        module = bridge.ln_final
    else:
        module = getattr(bridge.blocks[layer], (POST_NORMS if post else NORMS)[before], None)
    return None if module is None else _get(module, name)


def qk_norm_params(bridge, layer: int) -> tuple[Tensor, Tensor] | None:
    """Stored gains of the query and key norms of ``layer`` (Qwen3, Gemma 3, OLMo 2), or None."""
    attn = bridge.blocks[layer].attn
    if not hasattr(attn, "q_norm"):
        return None
    q, k = (getattr(getattr(attn, n), "_original_component", None) for n in ("q_norm", "k_norm"))
    gq, gk = (_get(m, "weight") if m is not None else None for m in (q, k))
    return None if gq is None or gk is None else (gq, gk)


def per_head_gains(q: Tensor, k: Tensor, offset: float, n_heads: int, n_kv_heads: int, d_head: int
                   ) -> tuple[Float[Tensor, "head d_head"], Float[Tensor, "kv_head d_head"]]:
    """Effective query / key norm gains (``offset + stored``) per head: a norm over each head's d_head (Qwen3,
    Gemma 3) has one gain shared by all heads, a norm over all heads at once (OLMo 2) one per head."""
    def gains(g: Tensor, n: int) -> Tensor:
        return (g + offset).reshape(-1, d_head).expand(n, d_head) if g.numel() == d_head else (g + offset).reshape(n, d_head)

    return gains(q, n_heads), gains(k, n_kv_heads)


def stack(per_layer: list[Tensor]) -> Tensor:
    """Stack per-layer tensors on one device (layers may sit on several GPUs)."""
    device = per_layer[0].device
    return torch.stack([t.to(device) for t in per_layer])


@dataclass(frozen=True)
class ExpertWeights:
    """One mixture-of-experts layer: router, routed experts (views of the stored fused tensors, so an
    edit of ``W_out[e, k, j]`` edits the model) and, where the family has one, the always-on shared expert.

    A token's MoE output is ``sum_{e in top-k} r_e * (act(x W_gate[e]) * (x W_in[e])) W_out[e]``
    (+ ``sigmoid(x W_shared_gate) * shared(x)``), with ``r`` the softmax of ``x W_router`` over the
    top-k experts (renormalised over them when ``renormalize``).

    GPT-OSS adds biases everywhere (``b_router``, ``b_in``, ``b_gate``, ``b_out``) and a clamped SwiGLU:
    ``clamp(up, -limit, limit) + 1`` times ``g * sigmoid(alpha g)`` with ``g = min(gate, limit)``
    (``swiglu_limit`` set); its routing (softmax of the top-k logits) is the renormalised form."""

    W_router: Float[Tensor, "d_model expert"]
    W_in: Float[Tensor, "expert d_model d_ff"]
    W_gate: Float[Tensor, "expert d_model d_ff"]
    W_out: Float[Tensor, "expert d_ff d_model"]
    top_k: int
    renormalize: bool
    shared: MLPWeights | None
    W_shared_gate: Float[Tensor, "d_model 1"] | None
    b_router: Float[Tensor, " expert"] | None = None
    b_in: Float[Tensor, "expert d_ff"] | None = None
    b_gate: Float[Tensor, "expert d_ff"] | None = None
    b_out: Float[Tensor, "expert d_model"] | None = None
    swiglu_limit: float | None = None  # GPT-OSS's clamped SwiGLU (None: the family's own activation)
    swiglu_alpha: float = 1.702

    @property
    def plain(self) -> bool:
        """No biases and the family's own activation: what a trace inside an expert assumes."""
        return self.swiglu_limit is None and all(b is None for b in (self.b_in, self.b_gate, self.b_out))

    def hidden(self, x: Float[Tensor, "token d_model"], act) -> Float[Tensor, "token expert d_ff"]:
        """Every expert's hidden activation for normed inputs ``x`` (``act``: the family's activation)."""
        gate = torch.einsum("td,edf->tef", x.float(), self.W_gate.float())
        up = torch.einsum("td,edf->tef", x.float(), self.W_in.float())
        if self.b_gate is not None:
            gate = gate + self.b_gate.float()
        if self.b_in is not None:
            up = up + self.b_in.float()
        if self.swiglu_limit is None:
            return act(gate) * up
        limit = self.swiglu_limit
        gate = gate.clamp(max=limit)
        return (up.clamp(-limit, limit) + 1) * gate * torch.sigmoid(gate * self.swiglu_alpha)

    @property
    def n_experts(self) -> int:
        return self.W_out.shape[0]

    def routing(self, x: Float[Tensor, "token d_model"]) -> Float[Tensor, "token expert"]:
        """Each expert's routing weight for normed inputs ``x``, as the family computes it (0: not chosen)."""
        logits = x.float() @ self.W_router.float()
        probs = (logits if self.b_router is None else logits + self.b_router.float()).softmax(-1)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        return torch.zeros_like(probs).scatter(1, top_i, top_w)


def expert_weights(bridge, layer: int) -> ExpertWeights | None:
    """The experts of ``layer`` when it is a mixture of experts with fused expert tensors (Mixtral,
    Qwen2-MoE, ... in transformers 5), else None."""
    block = getattr(bridge.blocks[layer].mlp, "_original_component", None)
    experts = getattr(block, "experts", None)
    router = getattr(block, "gate", None) if hasattr(block, "gate") else getattr(block, "router", None)
    if experts is None or router is None or not hasattr(experts, "gate_up_proj"):
        return None
    if hasattr(experts, "limit") and hasattr(experts, "gate_up_proj_bias"):
        return _gpt_oss_experts(experts, router)
    if getattr(router, "bias", None) is not None or not hasattr(router, "top_k"):
        return None  # a router this reading does not know: refused, not guessed
    if experts.gate_up_proj.shape[-1] != router.weight.shape[-1]:
        return None  # not [expert, 2 d_ff, d_model] (Llama 4 stores them the other way, and scores with a sigmoid)
    d_ff = experts.down_proj.shape[-1]
    gate_up = experts.gate_up_proj.detach()  # [expert, 2 d_ff, d_model]: gate rows first, then up
    shared = getattr(block, "shared_expert", None)
    shared_gate = getattr(block, "shared_expert_gate", None)
    return ExpertWeights(
        W_router=router.weight.detach().T,
        W_in=gate_up[:, d_ff:].transpose(1, 2),
        W_gate=gate_up[:, :d_ff].transpose(1, 2),
        W_out=experts.down_proj.detach().transpose(1, 2),
        top_k=int(router.top_k),
        renormalize=bool(getattr(router, "norm_topk_prob", True)),
        shared=None if shared is None else MLPWeights(
            W_in=shared.up_proj.weight.detach().T, W_gate=shared.gate_proj.weight.detach().T,
            W_out=shared.down_proj.weight.detach().T, b_in=None, b_out=None),
        W_shared_gate=None if shared_gate is None else shared_gate.weight.detach().T,
    )


def _gpt_oss_experts(experts, router) -> ExpertWeights:
    """GPT-OSS: gate and up interleaved along the last axis of ``gate_up_proj`` [expert, d_model, 2 d_ff], biases,
    a clamped SwiGLU, a router with a bias that takes the softmax of its top-k logits."""
    gate_up, bias = experts.gate_up_proj.detach(), experts.gate_up_proj_bias.detach()
    return ExpertWeights(
        W_router=router.weight.detach().T, W_in=gate_up[..., 1::2], W_gate=gate_up[..., ::2],
        W_out=experts.down_proj.detach(), top_k=int(router.top_k), renormalize=True, shared=None,
        W_shared_gate=None, b_router=router.bias.detach(), b_in=bias[..., 1::2], b_gate=bias[..., ::2],
        b_out=experts.down_proj_bias.detach(), swiglu_limit=float(experts.limit), swiglu_alpha=float(experts.alpha))
