"""What the workbench knows of each model family beyond its config, one entry per family.

A family (HF ``model_type``) is here when its tests verified the facts below; a family that is not here is
not refused for it: its facts are measured on the loaded model (:func:`~workbench.models.architecture.facts_of`)
and checked by the load-time self-check like everyone's. An entry says:

- facts its config does not spell out: the norms' gain offset (Gemma multiplies by ``1 + w``), an embedding
  scale, query / key norms, a parameter-free norm, an activation the config does not name;
- ``layout``: where its Hugging Face checkpoint keeps each weight, for the families that
  ``wb.load_weights(folder)`` reads shard by shard without building the model.

Nothing outside this module names a family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class CheckpointLayout:
    """HF parameter names of one family (block names relative to ``model.layers.{i}.``). The families read from
    shards share the Llama naming (``model.layers.{i}.self_attn.q_proj.weight``, ``mlp.gate_proj``, ...) and differ
    in which norms a block has."""

    pre_norms: bool  # a norm in front of each sublayer (parametric or not)
    pre_norm_names: tuple[str | None, str | None]  # its weight in front of attention, MLP (None: no weight)
    post_norm_names: tuple[str, str] | None = None  # norms on the attention's / MLP's output (sandwich, post-norm)
    qk_norm_names: tuple[str, str] | None = None  # query / key norms

    q, k, v, o = "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"
    gate, up, down = "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
    embed, final_norm, unembed = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"

    @staticmethod
    def block(layer: int, name: str) -> str:
        return f"model.layers.{layer}.{name}"


@dataclass(frozen=True)
class Family:
    """One family's entry (see the module docstring); the defaults are what a Llama-like family has."""

    gain_offset: float = 0.0  # a norm multiplies by (gain_offset + stored weight)
    embed_scale: str | None = None  # "sqrt": token embeddings are multiplied by sqrt(d_model)
    qk_norm: str | None = None  # "head": RMS over each head's d_head (Qwen3, Gemma 3); "full": over all heads (OLMo 2)
    norm: str | None = None  # "nonparametric": LayerNorm without gain or bias (OLMo); None: measured / from config
    act_fn: str | None = None  # the MLP's activation where the config names none (or the bridge's default is wrong)
    layout: CheckpointLayout | None = None  # where its checkpoint keeps each weight (None: wb.load_model only)


_PRE = ("input_layernorm", "post_attention_layernorm")  # Llama: the second norm is the one in front of the MLP
_QK = ("self_attn.q_norm", "self_attn.k_norm")
_SANDWICH: dict[str, Any] = dict(pre_norms=True, pre_norm_names=("input_layernorm", "pre_feedforward_layernorm"),
                                 post_norm_names=("post_attention_layernorm", "post_feedforward_layernorm"))
_POST = ("post_attention_layernorm", "post_feedforward_layernorm")  # OLMo 2/3: norms on the sublayers' outputs only
_LLAMA = CheckpointLayout(True, _PRE)
_GEMMA: dict[str, Any] = dict(gain_offset=1.0, embed_scale="sqrt")

FAMILIES: dict[str, Family] = {
    "llama": Family(layout=_LLAMA), "mistral": Family(layout=_LLAMA), "qwen2": Family(layout=_LLAMA),
    "granite": Family(layout=_LLAMA),
    "qwen3": Family(qk_norm="head", layout=CheckpointLayout(True, _PRE, qk_norm_names=_QK)),
    "gemma": Family(**_GEMMA, layout=_LLAMA),
    "gemma2": Family(**_GEMMA, layout=CheckpointLayout(**_SANDWICH)),
    "gemma3_text": Family(**_GEMMA, qk_norm="head", layout=CheckpointLayout(**_SANDWICH, qk_norm_names=_QK)),
    "olmo": Family(norm="nonparametric", layout=CheckpointLayout(True, (None, None))),
    "olmo2": Family(qk_norm="full", layout=CheckpointLayout(False, (None, None), _POST, _QK)),
    "olmo3": Family(qk_norm="full", layout=CheckpointLayout(False, (None, None), _POST, _QK)),
    "smollm3": Family(layout=_LLAMA),  # Llama's names; some layers without RoPE (a per-layer fact)
    "phi3": Family(), "mixtral": Family(), "qwen2_moe": Family(), "gpt2": Family(), "gpt_neox": Family(),
    "gptj": Family(), "opt": Family(), "falcon": Family(), "stablelm": Family(), "phi": Family(),
    "bloom": Family(act_fn="gelu_pytorch_tanh"),  # its config names no activation; the bridge's default is wrong
    # measured first, then written down once the family's tests verified them
    "olmoe": Family(qk_norm="full"), "qwen3_moe": Family(qk_norm="head"), "gpt_neo": Family(),
    "starcoder2": Family(), "llama4_text": Family(),
}


def family_of(name: str) -> Family | None:
    """The entry of ``name`` (HF model_type), None for a family the workbench measures rather than knows."""
    return FAMILIES.get(name)


def layout_of(config) -> CheckpointLayout:
    """The checkpoint layout of ``config``'s family, or one clear error naming the families read from shards."""
    name = str(getattr(config, "model_type", ""))
    family = FAMILIES.get(name)
    moe = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    if family is not None and family.layout is not None and not moe:
        return family.layout
    readable = sorted(f for f, entry in FAMILIES.items() if entry.layout is not None)
    raise UnsupportedModelError(
        f"wb.load_weights reads {', '.join(readable)} checkpoints, not {name or 'this model'}; "
        "load it with wb.load_model(folder) instead (or with device_map='auto' when it does not fit in memory)")
