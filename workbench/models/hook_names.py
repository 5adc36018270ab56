"""TransformerLens hook names, built by typed helpers instead of parsed shorthand."""

from __future__ import annotations

EMBED = "hook_embed"
UNEMBED = "unembed.hook_out"
FINAL_NORM_OUT = "ln_final.hook_out"


def resid_pre(layer: int) -> str:
    """Residual stream entering block ``layer``: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """Residual stream between attention and MLP of block ``layer``."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """Residual stream leaving block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def attn_pattern(layer: int) -> str:
    """Attention probabilities: [batch, head, query_pos, key_pos]."""
    return f"blocks.{layer}.attn.hook_pattern"


def attn_scores(layer: int) -> str:
    """Attention logits before softmax: [batch, head, query_pos, key_pos]."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def attn_z(layer: int) -> str:
    """Per-head mixed values before W_O: [batch, pos, head, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def attn_out(layer: int) -> str:
    """What the attention adds to the residual, exactly: [batch, pos, d_model]. In sandwich-norm families
    (Gemma 2/3, OLMo 2) this is after the output norm, and with a residual multiplier (Granite) after it."""
    return f"blocks.{layer}.hook_attn_out"


def attn_raw_out(layer: int) -> str:
    """Inside the attention, after its output projection: [batch, pos, d_model]. Usually ``z W_O + b_O``
    before any output norm or multiplier, but not in every bridge: use ``HookedModel.own_output_name``."""
    return f"blocks.{layer}.attn.hook_out"


def mlp_in(layer: int) -> str:
    """MLP input after the block's second norm: [batch, pos, d_model]."""
    return f"blocks.{layer}.mlp.hook_in"


def mlp_pre(layer: int) -> str:
    """MLP pre-activation (the gate branch for gated MLPs): [batch, pos, d_mlp]."""
    return f"blocks.{layer}.mlp.hook_pre"


def mlp_post(layer: int) -> str:
    """MLP hidden activation = the input of the down projection (W_out): [batch, pos, d_mlp]."""
    return f"blocks.{layer}.mlp.hook_post"


def mlp_out(layer: int) -> str:
    """What the MLP adds to the residual, exactly (after any output norm or multiplier): [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_mlp_out"


def mlp_raw_out(layer: int) -> str:
    """Inside the MLP, after its down projection: usually ``mlp_post W_out + b_out`` (see ``attn_raw_out``)."""
    return f"blocks.{layer}.mlp.hook_out"


def attn_q(layer: int, *, rotated: bool = False) -> str:
    """Per-head queries: [batch, pos, head, d_head]; ``rotated``: after the rotary embedding."""
    return f"blocks.{layer}.attn.hook_rot_q" if rotated else f"blocks.{layer}.attn.hook_q"


def attn_k(layer: int, *, rotated: bool = False) -> str:
    """Per-head keys: [batch, pos, head, d_head]; ``rotated``: after the rotary embedding."""
    return f"blocks.{layer}.attn.hook_rot_k" if rotated else f"blocks.{layer}.attn.hook_k"


def attn_v(layer: int) -> str:
    """Per-head values: [batch, pos, head, d_head]."""
    return f"blocks.{layer}.attn.hook_v"
