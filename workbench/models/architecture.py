"""Where a model's facts come from: the one place that builds its :class:`~workbench.models.facts.ModelFacts`.

Families differ in ways that change the maths (DESIGN.md, "Architectures"): where norms sit and
how they scale, whether attention and MLP read the same residual (parallel blocks), the MLP's
kind, and the attention's real form. :func:`facts_of` reads these once, with the model's shape, from the HF
config (numbers) and from the hooked bridge (structure), into one frozen record; :func:`facts_from_checkpoint`
reads the same from a checkpoint's config and shard headers (no model built). Nothing outside ``models/`` reads
a config or a module to learn them.

Per-family knowledge lives in :mod:`workbench.models.families` alone. Where it is silent, facts are measured
rather than assumed: a norm's kind (RMS or centring LayerNorm) and gain offset (``w`` or ``1 + w``) by probing
the norm module with a known input, the presence and width of query / key norms from their weights' shapes,
the structure of each layer (softmax attention or not, dense MLP or experts) from the hooked modules.
``measured`` names the facts that were. Facts are then checked on the model in hand by the load-time
self-check (:mod:`workbench.models.selfcheck`): an analysis whose identity fails refuses.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from .facts import AttentionForm, LayerFacts, ModelFacts
from .families import Family, family_of

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


def facts_of(bridge, hf_model, tokenizer, name: str, source: str) -> ModelFacts:
    """The facts of a hooked model (bridge for structure, HF config for numbers), measuring what the table
    does not say: norms by probing them, q/k norms by their weights' shapes, each layer by its modules.
    ``name`` and ``source`` say what was loaded (embedded, tiny, folder, gguf, hub, memory)."""
    cfg = bridge.cfg
    block = bridge.blocks[0]
    names = set(bridge.hook_dict)
    pre_norms = hasattr(block, "ln1")
    config = hf_model.config.get_text_config()  # a multimodal model's language model (Gemma 3 4B+, ...)
    family = str(getattr(config, "model_type", "") or type(hf_model).__name__)
    shape = dict(
        name=name, source=source, architecture=str(cfg.architecture or type(hf_model).__name__),
        n_layers=int(cfg.n_layers), d_model=int(cfg.d_model), d_mlp=_d_mlp(bridge), d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx), n_params=sum(p.numel() for p in hf_model.parameters()),
        dtype=str(next(hf_model.parameters()).dtype).removeprefix("torch."),
        tied_embeddings=bool(getattr(hf_model.config, "tie_word_embeddings", False)),
        bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
    )
    structure = dict(
        d_head=int(cfg.d_head),
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
    facts = _facts(config, family, structure, shape)
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
    layers = tuple(_layer_facts(bridge, config, l, names, structure) for l in range(facts.n_layers))
    if layers != facts.layers:
        measured.append("per-layer structure (from the modules; the config says otherwise or less)")
    mlp = "moe" if any(f.mlp == "moe" for f in layers) else facts.mlp
    if qk_centred:
        measured.append("q/k norm centres its input (probed)")
    return replace(facts, **updates, mlp=mlp, attention=replace(facts.attention, qk_norm=qk, qk_norm_centred=qk_centred),
                   layers=layers,
                   qk_norm_eps=qk_eps if qk_eps is not None else facts.norm_eps, measured=tuple(measured))


def _d_mlp(bridge) -> int:
    """The MLP's hidden width as stored (the bridge's config can disagree, e.g. OPT's ``ffn_dim``)."""
    try:
        return int(bridge.blocks[0].mlp.W_out.shape[0])
    except (AttributeError, ValueError, RuntimeError):  # mixtures of experts: no single W_out
        return int(bridge.cfg.d_mlp)


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
    """(query heads, key/value heads, head size) of one layer, from its projections where they show it. Where
    they disagree with the config, the hooked W_Q / W_K decide when the bridge has them: Qwen3-Next's ``q_proj``
    holds each head's query and its output gate, twice the rows of its heads."""
    hf = _original(attn)
    q, k = getattr(hf, "q_proj", None), getattr(hf, "k_proj", None)
    head_dim = getattr(hf, "head_dim", None)
    if q is not None and k is not None and isinstance(head_dim, int) and head_dim:
        q_out = _original(q).weight.shape[0]
        k_out = _original(k).weight.shape[0]
        if q_out % head_dim == 0 and k_out % head_dim == 0:
            found = (q_out // head_dim, k_out // head_dim, head_dim)
            return found if found == (n_heads, n_kv, d_head) else (_hooked_heads(attn) or found)
    return n_heads, n_kv, d_head


def _hooked_heads(attn) -> tuple[int, int, int] | None:
    """(query heads, key/value heads, head size) of the bridge's W_Q [head, d_model, d_head] and W_K, or None."""
    try:
        q, k = attn.W_Q, attn.W_K
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and q.ndim == k.ndim == 3 and q.shape[-1] == k.shape[-1]:
        return int(q.shape[0]), int(k.shape[0]), int(q.shape[-1])
    return None


def facts_from_checkpoint(config, tokenizer, *, name: str, d_vocab: int, dtype: str, n_params: int) -> ModelFacts:
    """The same facts from a checkpoint's config and shard headers alone (no model built: ``d_vocab``, the
    embedding's rows, ``dtype`` and ``n_params`` are read from the headers), for the families whose checkpoint
    layout :mod:`workbench.models.families` knows; :func:`facts_of` agrees with it (tested)."""
    from .families import layout_of

    family = str(getattr(config, "model_type", ""))
    layout = layout_of(config)
    n_heads = int(config.num_attention_heads)
    shape = dict(
        name=name, source="folder", architecture=(config.architectures or [type(config).__name__])[0],
        n_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size), d_mlp=int(config.intermediate_size),
        d_vocab=int(d_vocab), n_ctx=int(config.max_position_embeddings), n_params=int(n_params), dtype=dtype,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
    )
    structure = dict(
        d_head=int(getattr(config, "head_dim", None) or config.hidden_size // n_heads),
        parallel_blocks=False, pre_norms=layout.pre_norms, shared_input_norm=False,
        post_norms=layout.post_norm_names is not None, rms=True, gated=True, rotary=True,
        default_act=getattr(config, "hidden_activation", None) or "silu", default_eps=1e-5,
    )
    return _facts(config, family, structure, shape)


def _facts(config, family: str, structure: dict, shape: dict[str, Any]) -> ModelFacts:
    """Combine the model's shape, its structure (from the bridge or a checkpoint layout), the config's numbers and
    the table into one record."""
    table = family_of(family) or Family()
    eps = float(_first(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps",
                       default=structure["default_eps"]))
    n_layers, d_model, d_head = shape["n_layers"], shape["d_model"], structure["d_head"]
    norm = table.norm or ("rms" if structure["rms"] else "layernorm")
    n_experts = int(_first(config, "num_local_experts", "num_experts", default=0) or 0)
    mlp = "moe" if n_experts else ("gated" if structure["gated"] else "plain")
    scale = _first(config, "attention_multiplier")
    if scale is None and _first(config, "query_pre_attn_scalar") is not None:
        scale = float(config.query_pre_attn_scalar) ** -0.5
    embed_scale = math.sqrt(d_model) if table.embed_scale == "sqrt" else float(_first(config, "embedding_multiplier", default=1.0))
    return ModelFacts(
        **shape,
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
        qk_norm_eps=eps,  # the q/k norms' own, where the model has them, is measured in facts_of
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
