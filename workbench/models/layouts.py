"""Where a family keeps each weight in a Hugging Face checkpoint, for reading shards without building the model.

A loaded model learns its structure from the hooked bridge (:func:`~workbench.models.architecture.architecture_of`);
a checkpoint read shard by shard (:mod:`workbench.models.checkpoint`) has only its config and these names. The
families here share the Llama naming (``model.layers.{i}.self_attn.q_proj.weight``, ``mlp.gate_proj``, ...) and
differ in which norms a block has; the test suite checks that the facts built from this table equal the bridge's
for every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class CheckpointLayout:
    """HF parameter names of one family (block names relative to ``model.layers.{i}.``)."""

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


_PRE = ("input_layernorm", "post_attention_layernorm")  # Llama: the second norm is the one in front of the MLP
_QK = ("self_attn.q_norm", "self_attn.k_norm")
_SANDWICH: dict[str, Any] = dict(pre_norms=True, pre_norm_names=("input_layernorm", "pre_feedforward_layernorm"),
                 post_norm_names=("post_attention_layernorm", "post_feedforward_layernorm"))

LAYOUTS: dict[str, CheckpointLayout] = {
    "llama": CheckpointLayout(True, _PRE),
    "mistral": CheckpointLayout(True, _PRE),
    "qwen2": CheckpointLayout(True, _PRE),
    "granite": CheckpointLayout(True, _PRE),
    "gemma": CheckpointLayout(True, _PRE),
    "qwen3": CheckpointLayout(True, _PRE, qk_norm_names=_QK),
    "gemma2": CheckpointLayout(**_SANDWICH),
    "gemma3_text": CheckpointLayout(**_SANDWICH, qk_norm_names=_QK),
    "olmo": CheckpointLayout(True, (None, None)),  # LayerNorm without gain or bias
    "olmo2": CheckpointLayout(False, (None, None), ("post_attention_layernorm", "post_feedforward_layernorm"), _QK),
    "olmo3": CheckpointLayout(False, (None, None), ("post_attention_layernorm", "post_feedforward_layernorm"), _QK),
    "smollm3": CheckpointLayout(True, _PRE),  # Llama's names; some layers without RoPE (a per-layer fact)
}


def layout_of(config) -> CheckpointLayout:
    """The layout of ``config``'s family, or one clear error naming the families that can be read from shards."""
    family = str(getattr(config, "model_type", ""))
    if family in LAYOUTS and not getattr(config, "num_local_experts", None) and not getattr(config, "num_experts", None):
        return LAYOUTS[family]
    raise UnsupportedModelError(
        f"wb.load_weights reads {', '.join(sorted(LAYOUTS))} checkpoints, not {family or 'this model'}; "
        "load it with wb.load_model(folder) instead (or with device_map='auto' when it does not fit in memory)")
