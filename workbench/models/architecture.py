"""Architecture facts: what an analysis must know about a family to compute the right thing.

Families differ in ways that change the maths (DESIGN.md, "Architectures"): where norms sit and
how they scale, whether attention and MLP read the same residual (parallel blocks), the MLP's
kind, and the attention's real form. :func:`architecture_of` reads these once, from the HF config
(numbers) and from the hooked bridge (structure), into a frozen :class:`Architecture`. Nothing
outside ``models/`` reads a config or a module to learn them.

The table below is the only per-family knowledge in the workbench; a family not in it gets the
facts the bridge's structure and the config show, and ``known=False`` (the analyses that decompose
the residual stream, the trace and super experts, report their decomposition error with every
result, so a wrong fact shows as a large error rather than a silent number).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# model_type -> facts the config does not spell out. gain_offset: the norm multiplies by (offset + w);
# embed_scale "sqrt": embeddings are multiplied by sqrt(d_model); qk_norm: "head" = RMS over each head's
# d_head (Qwen3, Gemma 3), "full" = RMS over all heads' queries at once (OLMo 2).
_FAMILIES: dict[str, dict] = {
    "llama": {}, "mistral": {}, "qwen2": {}, "phi3": {}, "granite": {}, "mixtral": {}, "qwen2_moe": {},
    "qwen3": {"qk_norm": "head"},
    "gemma": {"gain_offset": 1.0, "embed_scale": "sqrt"},
    "gemma2": {"gain_offset": 1.0, "embed_scale": "sqrt"},
    "gemma3_text": {"gain_offset": 1.0, "embed_scale": "sqrt", "qk_norm": "head"},
    "olmo": {"norm": "nonparametric"},
    "olmo2": {"qk_norm": "full"},
    "gpt2": {}, "gpt_neox": {}, "gptj": {}, "opt": {}, "falcon": {}, "stablelm": {}, "bloom": {}, "phi": {},
}


@dataclass(frozen=True)
class AttentionForm:
    """How a layer turns queries and keys into a pattern, beyond softmax(q k^T / sqrt(d_head))."""

    scale: float  # multiplies q . k before the softmax
    softcap: float | None  # scores -> softcap * tanh(scores / softcap) (Gemma 2)
    sliding_window: tuple[int | None, ...]  # per layer: keys further back than this are masked (None: all)
    alibi: bool  # linear position biases added to the scores (BLOOM, some Falcons)
    rotary: bool  # rotary position embedding of q and k (on all or part of each head)
    qk_norm: str | None  # "head", "full" or None: queries and keys are normalised before the product


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

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[tuple[str, str]]:
        """Human-readable lines for tables and reports."""
        a = self.attention
        norms = " + ".join(p for p, on in (("pre", self.pre_norms), ("post", self.post_norms)) if on) or "none"
        mlp = self.mlp if self.mlp != "moe" else (
            f"mixture of {self.n_experts} experts, top-{self.experts_per_token}"
            + (" + shared expert" if self.shared_expert else ""))
        extras = [name for name, on in (("soft-capped", a.softcap), ("ALiBi", a.alibi), ("rotary", a.rotary),
                                        (f"{a.qk_norm} q/k norm", a.qk_norm),
                                        ("sliding window", any(w is not None for w in a.sliding_window))) if on]
        return [
            ("family", self.family + ("" if self.known else " (not in the workbench's table: facts inferred)")),
            ("block", "parallel attention + MLP" if self.parallel_blocks else "sequential attention -> MLP"),
            ("norms", f"{norms}, {self.norm}" + (", gain 1 + w" if self.gain_offset else "")),
            ("MLP", f"{mlp}, {self.act_fn}"),
            ("attention", f"scale {a.scale:.4g}" + (", " + ", ".join(extras) if extras else "")),
        ] + ([("residual", "the skip connection carries the normed stream")] if self.residual_from_norm else []) \
          + ([("residual multiplier", f"{self.residual_multiplier:g}")] if self.residual_multiplier != 1 else []) \
          + ([("embedding scale", f"{self.embed_scale:.4g}")] if self.embed_scale != 1 else [])


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


def architecture_of(bridge, hf_model) -> Architecture:
    """Read the facts of a hooked model (bridge for structure, HF config for numbers)."""
    cfg = bridge.cfg
    block = bridge.blocks[0]
    names = set(bridge.hook_dict)
    pre_norms = hasattr(block, "ln1")
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
    config = hf_model.config
    return _facts(config, str(getattr(config, "model_type", "") or type(hf_model).__name__), structure)


def architecture_from_config(config) -> Architecture:
    """The same facts from a checkpoint's config alone (no model built), for the families whose checkpoint
    layout :mod:`workbench.models.layouts` knows; :func:`architecture_of` agrees with it (tested)."""
    from .layouts import layout_of

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
    table = _FAMILIES.get(family, {})
    n_layers, d_model, d_head = structure["n_layers"], structure["d_model"], structure["d_head"]
    norm = table.get("norm") or ("rms" if structure["rms"] else "layernorm")
    n_experts = int(_first(config, "num_local_experts", "num_experts", default=0) or 0)
    mlp = "moe" if n_experts else ("gated" if structure["gated"] else "plain")
    scale = _first(config, "attention_multiplier")
    if scale is None and _first(config, "query_pre_attn_scalar") is not None:
        scale = float(config.query_pre_attn_scalar) ** -0.5
    embed = table.get("embed_scale")
    embed_scale = math.sqrt(d_model) if embed == "sqrt" else float(_first(config, "embedding_multiplier", default=1.0))
    return Architecture(
        family=family,
        known=family in _FAMILIES,
        parallel_blocks=structure["parallel_blocks"],
        pre_norms=structure["pre_norms"],
        shared_input_norm=structure["shared_input_norm"],
        post_norms=structure["post_norms"],
        norm=norm,
        gain_offset=float(table.get("gain_offset", 0.0)),
        norm_eps=float(_first(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps",
                              default=structure["default_eps"])),
        embed_scale=embed_scale,
        residual_multiplier=float(_first(config, "residual_multiplier", default=1.0)),
        residual_from_norm=bool(getattr(config, "apply_residual_connection_post_layernorm", False)),
        mlp=mlp,
        act_fn=str(_first(config, "hidden_act", "activation_function", "activation", default=structure["default_act"])),
        n_experts=n_experts,
        experts_per_token=int(_first(config, "num_experts_per_tok", default=0) or 0),
        shared_expert=bool(_first(config, "shared_expert_intermediate_size", default=0)),
        attention=AttentionForm(
            scale=float(scale if scale is not None else d_head ** -0.5),
            softcap=_first(config, "attn_logit_softcapping"),
            sliding_window=_sliding_windows(config, n_layers),
            alibi=bool(family == "bloom" or _first(config, "alibi", default=False)),
            rotary=structure["rotary"],
            qk_norm=table.get("qk_norm") or ("head" if getattr(config, "qk_layernorm", False) else None),
        ),
    )
