"""Tiny random models of many Hugging Face architecture families, built from their configs.

Each family is a config class name and the few fields that make it tiny (2 layers, d_model 64,
4 heads, the byte-level vocabulary of the workbench's own tiny models). ``save_family`` writes
the seeded model and the byte tokenizer to a folder that ``wb.load_model(folder)`` loads, the
path a researcher's own checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 259  # the byte tokenizer: 256 bytes + <bos> <eos> <pad>
BOS, EOS, PAD = 256, 257, 258

_COMMON = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False)
_LLAMA_LIKE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256,
)

# family -> (config class, fields). Kept close to each family's real quirks: GQA where the family has it,
# partial rotary where it has it, sliding windows and soft-capping for Gemma 2/3, parallel blocks for
# GPT-J / GPT-NeoX / Phi-2 / Falcon, experts for the mixtures.
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(_LLAMA_LIKE)),
    "mistral": ("MistralConfig", dict(_LLAMA_LIKE, sliding_window=None)),
    "qwen2": ("Qwen2Config", dict(_LLAMA_LIKE)),
    "qwen3": ("Qwen3Config", dict(_LLAMA_LIKE, head_dim=16)),
    "gemma": ("GemmaConfig", dict(_LLAMA_LIKE, head_dim=16)),
    "gemma2": ("Gemma2Config", dict(_LLAMA_LIKE, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                                    attn_logit_softcapping=50.0, final_logit_softcapping=30.0)),
    "gemma3": ("Gemma3TextConfig", dict(_LLAMA_LIKE, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                                        layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("Phi3Config", dict(_LLAMA_LIKE, num_key_value_heads=4)),
    "phi": ("PhiConfig", dict(_LLAMA_LIKE, num_key_value_heads=4, partial_rotary_factor=0.5)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.5)),
    "gptj": ("GPTJConfig", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=8)),
    "opt": ("OPTConfig", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=256, word_embed_proj_dim=64)),
    "olmo": ("OlmoConfig", dict(_LLAMA_LIKE)),
    "olmo2": ("Olmo2Config", dict(_LLAMA_LIKE)),
    "falcon": ("FalconConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    parallel_attn=True, new_decoder_architecture=False, multi_query=True)),
    "stablelm": ("StableLmConfig", dict(_LLAMA_LIKE, partial_rotary_factor=0.25)),
    "bloom": ("BloomConfig", dict(hidden_size=64, n_layer=2, n_head=4)),
    "granite": ("GraniteConfig", dict(_LLAMA_LIKE, attention_multiplier=0.2, residual_multiplier=0.5,
                                      embedding_multiplier=2.0, logits_scaling=4.0)),
    "mixtral": ("MixtralConfig", dict(_LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(_LLAMA_LIKE, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                                         num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1)),
    # Families the table did not know: each is right by measurement and the self-check, or refused.
    "gemma3_mm": ("Gemma3Config", dict(text_config=dict(_LLAMA_LIKE, vocab_size=VOCAB, head_dim=16, sliding_window=4,
                                                        query_pre_attn_scalar=16,
                                                        layer_types=["sliding_attention", "full_attention"]),
                                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                          num_attention_heads=2, image_size=28, patch_size=14),
                                       mm_tokens_per_image=4, image_token_index=PAD)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(_LLAMA_LIKE, head_dim=16, moe_intermediate_size=32, num_experts=4,
                                         num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0])),
    "olmo3": ("Olmo3Config", dict(_LLAMA_LIKE, sliding_window=4, layer_types=["sliding_attention", "full_attention"])),
    "olmoe": ("OlmoeConfig", dict(_LLAMA_LIKE, num_experts=4, num_experts_per_tok=2)),
    "smollm3": ("SmolLM3Config", dict(_LLAMA_LIKE, no_rope_layers=[1, 0])),
    "gpt_neo": ("GPTNeoConfig", dict(hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=256,
                                     attention_types=[[["global", "local"], 1]], window_size=4)),
    "cohere": ("CohereConfig", dict(_LLAMA_LIKE, logit_scale=0.5, use_qk_norm=True)),
    "starcoder2": ("Starcoder2Config", dict(_LLAMA_LIKE, sliding_window=None)),
    "gpt_oss": ("GptOssConfig", dict(_LLAMA_LIKE, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                                     sliding_window=4, layer_types=["sliding_attention", "full_attention"])),
    "llama4": ("Llama4TextConfig", dict(_LLAMA_LIKE, head_dim=16, intermediate_size_mlp=128, num_local_experts=4,
                                        num_experts_per_tok=1, moe_layers=[1], interleave_moe_layer_step=2,
                                        no_rope_layers=[1, 0], attention_chunk_size=8,
                                        layer_types=["chunked_attention", "full_attention"])),
    "qwen3_next": ("Qwen3NextConfig", dict(_LLAMA_LIKE, head_dim=16, moe_intermediate_size=32, num_experts=4,
                                           num_experts_per_tok=2, shared_expert_intermediate_size=32,
                                           linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                                           linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"])),
    # a hybrid whose every identity holds: head composition runs over its attention layers, skipping the others
    "lfm2": ("Lfm2Config", dict(_LLAMA_LIKE, num_hidden_layers=4,
                                layer_types=["conv", "full_attention", "conv", "full_attention"])),
    "gemma4": ("Gemma4TextConfig", dict(_LLAMA_LIKE, head_dim=16, sliding_window=4, hidden_size_per_layer_input=8,
                                        vocab_size_per_layer_input=VOCAB,
                                        layer_types=["sliding_attention", "full_attention"])),
}


# Identities the load-time self-check cannot verify on these families (their analyses refuse, saying which):
# Llama 4's experts are stored and routed differently from the fused experts the workbench reads;
# Qwen3-Next's full-attention layers gate their output with a sigmoid of the input (and the other layers are
# linear attention);
# Gemma 4 adds per-layer embeddings to the residual stream and its bridge exposes no W_Q.
UNVERIFIED: dict[str, set[str]] = {
    "llama4": {"experts"},
    "lfm2": {"uniform_attention"},  # layers 0 and 2 are convolutions: what stacks every layer's heads refuses
    "qwen3_next": {"values_mixed", "pattern", "uniform_attention"},
    "gemma4": {"residual", "head_writes", "qkv", "attn_write", "values_mixed", "pattern", "uniform_attention",
               "uniform_heads"},
}


def build_family(family: str, seed: int = 0):
    """The family's tiny model, weights drawn from ``seed``, in eval mode (eager attention)."""
    import transformers

    class_name, fields = FAMILIES[family]
    config = getattr(transformers, class_name)(**_COMMON, **fields)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
        # Norm gains initialise to ones (or zeros for 1 + w): randomise them so that folding them is tested.
        for name, param in model.named_parameters():
            if "norm" in name.lower() or "ln" in name.lower():
                with torch.no_grad():
                    param.add_(0.3 * torch.randn_like(param))
            elif name.endswith("bias") and ("experts" in name or "router" in name):  # GPT-OSS: zeros at init
                with torch.no_grad():
                    param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def save_family(family: str, folder: Path, seed: int = 0) -> Path:
    """Write the family's tiny model and the byte tokenizer to ``folder``; return it."""
    from workbench.models.tiny import byte_tokenizer

    folder = Path(folder)
    build_family(family, seed).save_pretrained(folder)
    byte_tokenizer(folder.parent / ".tokenizer").save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- the families x analyses matrix
PROMPT = "The cat sat on the mat. The cat"


def analysis_runs(model) -> dict:
    """Every analysis with small settings (tiny models, seconds): name -> a call returning its Result."""
    import workbench as wb

    fast = dict(eval_windows=2, window=32, cache=False)
    return {
        "overview": lambda: wb.model_overview(model, cache=False),
        "head composition": lambda: wb.head_composition(model, null_samples=8, cache=False),
        "head effects": lambda: wb.head_effects(model, prompts=(PROMPT,), n_writers=1, cache=False),
        "super weights": lambda: wb.super_weights(model, prompts=(PROMPT,), **fast),
        "super-weight trace": lambda: wb.trace_super_weight(
            model, weight=(1, 3, 5), prompt=PROMPT, **({"expert": 0} if model.facts.layers[1].mlp == "moe" else {}), cache=False),
        "super experts": lambda: wb.super_experts(model, prompts=(PROMPT,), **fast),
        "bilinear replacement": lambda: wb.bilinear_replacement(model, layer=0, cache=False),
        "ReAGent": lambda: wb.reagent(model, prompt=PROMPT, max_steps=10, cache=False),
    }


def outcome(run) -> tuple[str, object]:
    """("yes", result) or ("refused: <why>", None) for an analysis that raises UnsupportedModelError."""
    import workbench as wb

    try:
        return "yes", run()
    except wb.UnsupportedModelError as exc:
        return f"refused: {exc}", None


def readme_table(outcomes: dict[tuple[str, str], str]) -> str:
    """Markdown: families x analyses (yes / no, with the reasons for each refusal below the table)."""
    families = sorted({f for f, _ in outcomes})
    analyses = list(dict.fromkeys(a for _, a in outcomes))
    lines = ["| family | " + " | ".join(analyses) + " |", "|---" * (len(analyses) + 1) + "|"]
    reasons: dict[str, list[str]] = {}
    for family in families:
        cells = []
        for analysis in analyses:
            text = outcomes[(family, analysis)]
            if text == "yes":
                cells.append("yes")
            else:
                why = text.removeprefix("refused: ").replace(family, "the model", 1)
                reasons.setdefault(f"{analysis}: {why}", []).append(family)
                cells.append("no")
        config = FAMILIES[family][0].removesuffix("Config")
        lines.append(f"| {family} ({config}) | " + " | ".join(cells) + " |")
    lines += ["", "yes: the analysis ran and its identities held; no: it refused, saying why:", ""]
    lines += [f"- {why} ({', '.join(fams)})" for why, fams in reasons.items()]
    return "\n".join(lines)
