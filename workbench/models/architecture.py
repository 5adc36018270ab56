"""Architecture facts: what an analysis must know about a family to compute the right thing.

Families differ in ways that change the maths (DESIGN.md, "Architectures"): where norms sit and
how they scale, whether attention and MLP read the same residual (parallel blocks), the MLP's
kind, and the attention's real form. :func:`architecture_of` reads these once, from the HF config
(numbers) and from the hooked bridge (structure), into a frozen :class:`Architecture`. Nothing
outside ``models/`` reads a config or a module to learn them.

Per-family knowledge lives in :mod:`workbench.models.families` alone. Where it is silent, facts are measured
rather than assumed: a norm's kind (RMS or centring LayerNorm) and gain offset (``w`` or ``1 + w``) by probing
the norm module with a known input, the presence and width of query / key norms from their weights' shapes,
the structure of each layer (softmax attention or not, dense MLP or experts) from the hooked modules.
``measured`` names the facts that were. Facts are then checked on the model in hand by the load-time
self-check (:mod:`workbench.models.selfcheck`): an analysis whose identity fails refuses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch

from .families import Family, family_of

if TYPE_CHECKING:
    from .selfcheck import SelfCheck

@dataclass(frozen=True)
class AttentionForm:
    """How a layer turns queries and keys into a pattern, beyond softmax(q k^T / sqrt(d_head))."""

    scale: float  # multiplies q . k before the softmax
    softcap: float | None  # scores -> softcap * tanh(scores / softcap) (Gemma 2)
    sliding_window: tuple[int | None, ...]  # per layer: keys further back than this are masked (None: all)
    alibi: bool  # linear position biases added to the scores (BLOOM, some Falcons)
    rotary: bool  # rotary position embedding of q and k (on all or part of each head)
    qk_norm: str | None  # "head", "full" or None: queries and keys are normalised before the product
    qk_norm_centred: bool = False  # the q/k norm is a LayerNorm (subtracts the mean; Cohere), not an RMS norm


@dataclass(frozen=True)
class LayerFacts:
    """What one layer is: analyses run on the layers where they are defined and say which they skipped."""

    kind: str  # "full", "sliding window", "chunked", "linear attention" (state space, gated delta, ...),
    # "convolution" (a gated short convolution mixing nearby tokens: LFM2) or "none"
    rope: bool  # queries and keys are rotated (False: a no-RoPE layer, or no rotary embedding at all)
    n_heads: int  # query heads (0 without softmax attention)
    n_kv_heads: int
    d_head: int
    mlp: str  # "plain", "gated", "moe" or "none"

    @property
    def attention(self) -> bool:
        """True for softmax attention with heads (full, sliding window or chunked)."""
        return self.kind in ("full", "sliding window", "chunked")


@dataclass(frozen=True)
class Architecture:
    """One family's facts, as analyses need them. See the module docstring."""

    family: str  # HF model_type, e.g. "gemma2"
    known: bool  # the family is in the workbench's table (its facts were checked there)
    parallel_blocks: bool  # attention and MLP both read the block's input (GPT-J, GPT-NeoX, Phi-2, Falcon)
    pre_norms: bool  # a norm in front of each sublayer
    shared_input_norm: bool  # parallel blocks whose attention and MLP read one norm (GPT-J, Phi-2, Falcon)
    post_norms: bool  # a norm on each sublayer's output before it joins the residual (Gemma 2/3, OLMo 2)
    norm: str  # "rms", "layernorm" or "nonparametric" (LayerNorm without gain or bias, OLMo)
    gain_offset: float  # a norm multiplies by (gain_offset + stored weight): 1 for Gemma, else 0
    norm_eps: float
    embed_scale: float  # token embeddings are multiplied by this before the first block
    residual_multiplier: float  # each sublayer's output is multiplied by this before it is added (Granite)
    residual_from_norm: bool  # the skip connection carries the normed stream, not the stream (some BLOOMs)
    mlp: str  # "plain", "gated" or "moe"
    act_fn: str  # the MLP's activation (HF name)
    n_experts: int  # 0 unless mixture of experts
    experts_per_token: int
    shared_expert: bool  # an always-on expert beside the routed ones (Qwen2-MoE)
    attention: AttentionForm
    layers: tuple[LayerFacts, ...] = ()  # per layer, never read from block 0 alone
    qk_norm_eps: float = 1e-6
    measured: tuple[str, ...] = ()  # facts measured on the model rather than read from the table or config
    checks: SelfCheck | None = None  # the load-time self-check's outcome (models/selfcheck.py)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["checks"] = None if self.checks is None else {n: i.describe() for n, i in self.checks.identities.items()}
        return out

    @property
    def attention_layers(self) -> list[int]:
        """Layers with softmax attention heads (all of them, except in hybrids)."""
        return [l for l, f in enumerate(self.layers) if f.attention]

    @property
    def moe_layers(self) -> list[int]:
        """Layers whose MLP is a mixture of experts."""
        return [l for l, f in enumerate(self.layers) if f.mlp == "moe"]

    def describe(self, *, checks: bool = True) -> list[tuple[str, str]]:
        """Human-readable lines for tables and reports: the facts, which were measured, and (``checks``) the
        outcome of each identity of the load-time self-check."""
        a = self.attention
        norms = " + ".join(p for p, on in (("pre", self.pre_norms), ("post", self.post_norms)) if on) or "none"
        mlp = self.mlp if self.mlp != "moe" else (
            f"mixture of {self.n_experts} experts, top-{self.experts_per_token}"
            + (" + shared expert" if self.shared_expert else ""))
        extras = [name for name, on in (("soft-capped", a.softcap), ("ALiBi", a.alibi), ("rotary", a.rotary),
                                        (f"{a.qk_norm} q/k norm", a.qk_norm),
                                        ("sliding window", any(w is not None for w in a.sliding_window))) if on]
        return [
            ("family", self.family + ("" if self.known else " (not in the workbench's table: facts measured, see below)")),
            ("block", "parallel attention + MLP" if self.parallel_blocks else "sequential attention -> MLP"),
            ("norms", f"{norms}, {self.norm}" + (", gain 1 + w" if self.gain_offset else "")),
            ("MLP", f"{mlp}, {self.act_fn}"),
            ("attention", f"scale {a.scale:.4g}" + (", " + ", ".join(extras) if extras else "")),
        ] + ([("residual", "the skip connection carries the normed stream")] if self.residual_from_norm else []) \
          + ([("residual multiplier", f"{self.residual_multiplier:g}")] if self.residual_multiplier != 1 else []) \
          + ([("embedding scale", f"{self.embed_scale:.4g}")] if self.embed_scale != 1 else []) \
          + self._describe_layers() \
          + [("facts measured", ", ".join(self.measured) or "none (all read from the table and the config)")] \
          + ((self.checks.describe() if self.checks is not None else [("self-check", "not run (weights only)")])
             if checks else [])

    def _describe_layers(self) -> list[tuple[str, str]]:
        """Per-layer structure, one line per kind of layer (``layers 0-3,5``)."""
        groups: dict[str, list[int]] = {}
        for l, f in enumerate(self.layers):
            text = f.kind + ("" if f.rope or not self.attention.rotary or not f.attention else ", no RoPE")
            if f.attention:
                text += f", {f.n_heads} heads / {f.n_kv_heads} kv of {f.d_head}"
            text += f", {f.mlp} MLP" if f.mlp != "moe" else ", experts"
            groups.setdefault(text, []).append(l)
        if len(groups) <= 1:
            return []
        return [(f"layers {layer_span(ls)}", text) for text, ls in groups.items()]


def layer_span(layers: list[int] | tuple[int, ...]) -> str:
    """Layer indices as runs: ``0-3,5,7-9``."""
    if not layers:
        return "none"
    runs, start = [], layers[0]
    for i, a in enumerate(layers):
        if i + 1 == len(layers) or layers[i + 1] != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = layers[i + 1] if i + 1 < len(layers) else a
    return ",".join(runs)


def _first(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _sliding_windows(config, n_layers: int) -> tuple[int | None, ...]:
    window = _first(config, "sliding_window")
    types = getattr(config, "layer_types", None)
    if not window or (getattr(config, "use_sliding_window", True) is False):
        return (None,) * n_layers
    if types:
        return tuple(window if t == "sliding_attention" else None for t in types)
    return (int(window),) * n_layers


def refusal(config) -> str | None:
    """Why the workbench cannot analyse a model of this config at all (said at load), or None."""
    config = config.get_text_config()
    family = getattr(config, "model_type", "this model")
    if getattr(config, "is_encoder_decoder", False):
        return (f"{family} is an encoder-decoder; the workbench analyses decoder-only language models "
                "(load a causal LM such as Llama, Qwen, Gemma or GPT-2 instead)")
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if family in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return (f"{family} is an encoder (trained to fill in masked tokens, its norms after each residual add); "
                "the workbench analyses decoder-only language models: load a causal LM instead")
    if getattr(config, "kv_lora_rank", None):
        return (f"{family} uses multi-head latent attention: each head's queries, keys and values are decompressed "
                "from shared low-rank latents, so no head has a W_Q / W_K / W_V of its own to decompose; use "
                "wb.reagent (it needs only the logits) with transformers directly, or a grouped-query model instead")
    return None


def architecture_of(bridge, hf_model) -> Architecture:
    """Read the facts of a hooked model (bridge for structure, HF config for numbers), measuring what the table
    does not say: norms by probing them, q/k norms by their weights' shapes, each layer by its modules."""
    cfg = bridge.cfg
    block = bridge.blocks[0]
    names = set(bridge.hook_dict)
    pre_norms = hasattr(block, "ln1")
    config = hf_model.config.get_text_config()  # a multimodal model's language model (Gemma 3 4B+, ...)
    family = str(getattr(config, "model_type", "") or type(hf_model).__name__)
    structure = dict(
        n_layers=int(cfg.n_layers), d_model=int(cfg.d_model), d_head=int(cfg.d_head),
        parallel_blocks="blocks.0.hook_resid_mid" not in names,
        pre_norms=pre_norms,
        shared_input_norm=pre_norms and not hasattr(block, "ln2"),
        post_norms=hasattr(block, "ln1_post"),
        rms=bool(getattr(cfg, "uses_rms_norm", False) or "RMS" in str(cfg.normalization_type)),
        gated=bool(cfg.gated_mlp),
        rotary="blocks.0.attn.hook_rot_q" in names or str(cfg.positional_embedding_type) == "rotary",
        default_act=cfg.act_fn,
        default_eps=getattr(cfg, "eps", 1e-5),
    )
    facts = _facts(config, family, structure)
    measured: list[str] = []
    norm = _probe_norm(block.ln1 if pre_norms else getattr(block, "ln1_post", None), facts.norm_eps)
    updates: dict = {}
    if norm is not None:
        kind, offset = norm
        if facts.norm != "nonparametric" and (kind, offset) != (facts.norm, facts.gain_offset):
            measured.append(f"norm {kind}, gain {'1 + w' if offset else 'w'} (probed)")
        elif family_of(family) is None:
            measured.append("norm kind and gain offset (probed)")
        if facts.norm != "nonparametric":
            updates.update(norm=kind, gain_offset=offset)
    qk, qk_eps, qk_centred = _qk_norm(bridge, config, int(cfg.d_head))
    if qk != facts.attention.qk_norm:
        measured.append(f"q/k norm {qk or 'absent'} (from the weights' shapes)")
    elif qk and family_of(family) is None:
        measured.append("q/k norm (from the weights' shapes)")
    layers = tuple(_layer_facts(bridge, config, l, names, structure) for l in range(structure["n_layers"]))
    if layers != facts.layers:
        measured.append("per-layer structure (from the modules; the config says otherwise or less)")
    mlp = "moe" if any(f.mlp == "moe" for f in layers) else facts.mlp
    if qk_centred:
        measured.append("q/k norm centres its input (probed)")
    return replace(facts, **updates, mlp=mlp, attention=replace(facts.attention, qk_norm=qk, qk_norm_centred=qk_centred),
                   layers=layers,
                   qk_norm_eps=qk_eps if qk_eps is not None else facts.norm_eps, measured=tuple(measured))


def _original(module):
    return getattr(module, "_original_component", module)


@torch.no_grad()
def _probe_norm(bridge_norm, eps: float) -> tuple[str, float] | None:
    """(kind, gain offset) of a norm module, measured by feeding it a known input: "rms" or "layernorm" (centres
    the input), gain ``w`` (offset 0) or ``1 + w`` (offset 1). None when no candidate reproduces its output."""
    if bridge_norm is None:
        return None
    module = _original(bridge_norm)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        return None
    d = weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, d, generator=generator) * 2 + 0.5).to(weight.device, weight.dtype)
    try:
        out = module(x).float()
    except Exception:  # a norm that cannot run alone is simply not probed
        return None
    x, w = x.float(), weight.float()
    bias = getattr(module, "bias", None)
    b = bias.float() if isinstance(bias, torch.Tensor) else 0.0
    best = None
    for kind in ("rms", "layernorm"):
        centred = x - x.mean(-1, keepdim=True) if kind == "layernorm" else x
        normed = centred * torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
        for offset in (0.0, 1.0):
            error = float((normed * (w + offset) + b - out).norm() / out.norm().clamp_min(1e-30))
            if best is None or error < best[0]:
                best = (error, kind, offset)
    tol = 1e-3 if weight.dtype in (torch.float32, torch.float64) else 3e-2
    return (best[1], best[2]) if best is not None and best[0] < tol else None


_QK_NAMES = ("q_norm", "q_layernorm", "query_layernorm", "query_norm")


def _qk_norm(bridge, config, d_head: int) -> tuple[str | None, float | None, bool]:
    """("head" | "full" | None, eps, centred) of the query norm, from the HF attention module of the first
    attention layer: a gain of d_head values (or one row per head) normalises each head, of n_heads * d_head all
    at once; ``centred`` when probing it shows a LayerNorm (it subtracts the mean)."""
    for block in bridge.blocks:
        attn = getattr(block, "attn", None)
        if attn is None:
            continue
        hf_attn = _original(attn)
        for name in _QK_NAMES:
            module = getattr(hf_attn, name, None)
            if module is None:
                continue
            weight = getattr(module, "weight", None)
            eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None)
            if not isinstance(weight, torch.Tensor) or weight.ndim == 2 or weight.numel() == d_head:
                return "head", eps, _centres(module, weight, d_head)
            return "full", eps, _centres(module, weight, weight.numel())
        return None, None, False
    return None, None, False


@torch.no_grad()
def _centres(module, weight, width: int) -> bool:
    """Whether a q/k norm subtracts the mean: its output on a constant-plus-noise input then has zero mean
    before the gain (the gain is divided out)."""
    if not isinstance(weight, torch.Tensor):
        return False
    shape = (1, 2, *weight.shape) if weight.ndim == 2 else (1, 2, width)
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) + 3.0).to(weight.device, weight.dtype)
    try:
        out = module(x).float() / weight.float().clamp_min(1e-6)
    except Exception:  # a norm that cannot run alone is read as not centring; the self-check decides
        return False
    if weight.ndim == 1 and width != weight.numel():
        return False
    return bool(out.mean(-1).abs().max() < 1e-2 * out.abs().mean())


_KINDS = {"full_attention": "full", "sliding_attention": "sliding window", "chunked_attention": "chunked",
          "linear_attention": "linear attention", "global": "full", "local": "sliding window"}


def _layer_facts(bridge, config, layer: int, names: set[str], structure: dict) -> LayerFacts:
    """One layer's facts: softmax attention or not from its hooks, the kind from the config's layer types, head
    counts from its weights, the MLP's kind from its module."""
    prefix = f"blocks.{layer}."
    block = bridge.blocks[layer]
    has_heads = prefix + "attn.hook_pattern" in names and hasattr(block, "attn")
    types = getattr(config, "layer_types", None) or getattr(config, "attention_layers", None)
    kind = _KINDS.get(str(types[layer]), "full") if types and layer < len(types) else "full"
    if not has_heads:
        mixers = [n for n in names if n.startswith(prefix)]
        kind = ("linear attention" if any("linear_attn" in n or "mixer" in n or "ssm" in n for n in mixers) else
                "convolution" if any(n.startswith(prefix + "conv.") for n in mixers) else "none")
    elif kind == "linear attention":
        kind = "full"
    no_rope = getattr(config, "no_rope_layers", None)
    rope = structure["rotary"] and has_heads and not (no_rope and layer < len(no_rope) and not no_rope[layer])
    n_heads = n_kv = d_head = 0
    if has_heads:
        n_heads, n_kv, d_head = _head_shape(block.attn, int(bridge.cfg.n_heads),
                                            int(getattr(bridge.cfg, "n_key_value_heads", None) or bridge.cfg.n_heads),
                                            structure["d_head"])
    mlp_module = _original(getattr(block, "mlp", None)) if hasattr(block, "mlp") else None
    if mlp_module is None:
        mlp = "none"
    elif getattr(mlp_module, "experts", None) is not None:
        mlp = "moe"
    else:
        mlp = "gated" if structure["gated"] else "plain"
    return LayerFacts(kind=kind, rope=bool(rope), n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head, mlp=mlp)


def _head_shape(attn, n_heads: int, n_kv: int, d_head: int) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) of one layer, from its projections where they show it."""
    hf = _original(attn)
    q, k = getattr(hf, "q_proj", None), getattr(hf, "k_proj", None)
    head_dim = getattr(hf, "head_dim", None)
    if q is not None and k is not None and isinstance(head_dim, int) and head_dim:
        q_out = _original(q).weight.shape[0]
        k_out = _original(k).weight.shape[0]
        if q_out % head_dim == 0 and k_out % head_dim == 0:
            return q_out // head_dim, k_out // head_dim, head_dim
    return n_heads, n_kv, d_head


def architecture_from_config(config) -> Architecture:
    """The same facts from a checkpoint's config alone (no model built), for the families whose checkpoint
    layout :mod:`workbench.models.families` knows; :func:`architecture_of` agrees with it (tested)."""
    from .families import layout_of

    family = str(getattr(config, "model_type", ""))
    layout = layout_of(config)
    n_heads = int(config.num_attention_heads)
    structure = dict(
        n_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size),
        d_head=int(getattr(config, "head_dim", None) or config.hidden_size // n_heads),
        parallel_blocks=False, pre_norms=layout.pre_norms, shared_input_norm=False,
        post_norms=layout.post_norm_names is not None, rms=True, gated=True, rotary=True,
        default_act=getattr(config, "hidden_activation", None) or "silu", default_eps=1e-5,
    )
    return _facts(config, family, structure)


def _facts(config, family: str, structure: dict) -> Architecture:
    """Combine the structure (from the bridge or a checkpoint layout) with the config's numbers and the table."""
    table = family_of(family) or Family()
    eps = float(_first(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps",
                       default=structure["default_eps"]))
    n_layers, d_model, d_head = structure["n_layers"], structure["d_model"], structure["d_head"]
    norm = table.norm or ("rms" if structure["rms"] else "layernorm")
    n_experts = int(_first(config, "num_local_experts", "num_experts", default=0) or 0)
    mlp = "moe" if n_experts else ("gated" if structure["gated"] else "plain")
    scale = _first(config, "attention_multiplier")
    if scale is None and _first(config, "query_pre_attn_scalar") is not None:
        scale = float(config.query_pre_attn_scalar) ** -0.5
    embed_scale = math.sqrt(d_model) if table.embed_scale == "sqrt" else float(_first(config, "embedding_multiplier", default=1.0))
    return Architecture(
        family=family,
        known=family_of(family) is not None,
        parallel_blocks=structure["parallel_blocks"],
        pre_norms=structure["pre_norms"],
        shared_input_norm=structure["shared_input_norm"],
        post_norms=structure["post_norms"],
        norm=norm,
        gain_offset=table.gain_offset,
        norm_eps=eps,
        embed_scale=embed_scale,
        residual_multiplier=float(_first(config, "residual_multiplier", default=1.0)),
        residual_from_norm=bool(getattr(config, "apply_residual_connection_post_layernorm", False)),
        mlp=mlp,
        act_fn=str(table.act_fn or _first(config, "hidden_act", "activation_function", "activation",
                                                 default=structure["default_act"])),
        n_experts=n_experts,
        experts_per_token=int(_first(config, "num_experts_per_tok", default=0) or 0),
        shared_expert=bool(_first(config, "shared_expert_intermediate_size", default=0)),
        attention=AttentionForm(
            scale=float(scale if scale is not None else d_head ** -0.5),
            softcap=_first(config, "attn_logit_softcapping"),
            sliding_window=_sliding_windows(config, n_layers),
            alibi=bool(family == "bloom" or _first(config, "alibi", default=False)),
            rotary=structure["rotary"],
            qk_norm=table.qk_norm or ("head" if getattr(config, "qk_layernorm", False) else None),
        ),
        layers=tuple(_config_layer(config, l, structure, mlp) for l in range(n_layers)),
        qk_norm_eps=eps,  # the q/k norms' own, where the model has them, is measured in architecture_of
    )


def _config_layer(config, layer: int, structure: dict, mlp: str) -> LayerFacts:
    """A layer's facts as the config states them (a checkpoint read without building the model)."""
    types = getattr(config, "layer_types", None)
    kind = _KINDS.get(str(types[layer]), "full") if types and layer < len(types) else "full"
    no_rope = getattr(config, "no_rope_layers", None)
    n_heads = int(_first(config, "num_attention_heads", "n_head", "num_heads", default=0) or 0)
    return LayerFacts(kind=kind, rope=bool(structure["rotary"] and not (no_rope and not no_rope[layer])),
                      n_heads=n_heads, n_kv_heads=int(_first(config, "num_key_value_heads", default=n_heads) or n_heads),
                      d_head=structure["d_head"], mlp=mlp)
