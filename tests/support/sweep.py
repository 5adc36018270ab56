"""Every decoder architecture the installed TransformerLens bridge boots, as a tiny random model.

The bridge's table (``SUPPORTED_ARCHITECTURES``) names HF model classes; for each one that the installed
transformers has, with a causal-LM head and a config class, ``tiny_config`` shrinks the class's default config
(2 layers, width 64, 4 heads, the byte vocabulary) and ``build`` makes the seeded model. Encoders, encoder-
decoders, vision and audio models are listed with the reason they are out of scope; a config that cannot be
built small is skipped with the error it gave. No family knowledge lives here: what a model is gets measured
by the workbench's load-time self-check.
"""

from __future__ import annotations

import torch

from .families import BOS, EOS, PAD, VOCAB

_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_layers=2, n_layer=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, n_embd=64, n_head=4, d_model=64, max_position_embeddings=256,
              n_positions=256, vocab_size=VOCAB, moe_intermediate_size=32, num_experts=4, num_local_experts=4,
              n_routed_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=32, sliding_window=8,
              bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
              first_k_dense_replace=0, kv_lora_rank=None, q_lora_rank=None)
_NOT_DECODERS = ("ForMaskedLM", "ForConditionalGeneration", "ForCTC", "ForPreTraining", "ForImageClassification",
                 "ForAudioClassification", "Model", "LMHeadModel")


def bridge_architectures() -> list[str]:
    """HF class names the installed bridge boots."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return sorted(SUPPORTED_ARCHITECTURES)


def config_class(architecture: str):
    """The transformers config class of a model class name, or None when transformers does not have it."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not hasattr(transformers, architecture):
        return None
    for model_type, name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        if name == architecture and model_type in CONFIG_MAPPING_NAMES:
            return getattr(transformers, CONFIG_MAPPING_NAMES[model_type], None)
    return None


def scope(architecture: str) -> str | None:
    """Why an architecture is out of the sweep's scope (None: a causal decoder the sweep builds)."""
    if architecture.endswith("ForCausalLM") or (architecture.endswith("LMHeadModel") and architecture.startswith("GPT")):
        return None if config_class(architecture) is not None else "transformers has no causal-LM class for it"
    if architecture.endswith(_NOT_DECODERS):
        return "not a causal decoder (encoder, encoder-decoder, multimodal wrapper or audio/vision model)"
    return "no causal-LM class in transformers"


def tiny_config(architecture: str):
    """The architecture's default config, shrunk: only the fields the config class has are changed."""
    cls = config_class(architecture)
    defaults = cls()
    fields = {k: v for k, v in _SMALL.items() if hasattr(defaults, k)}
    for list_field in ("layer_types", "no_rope_layers", "mlp_only_layers", "attention_types"):
        if hasattr(defaults, list_field):
            fields[list_field] = None
    config = cls(**{k: v for k, v in fields.items() if v is not None or k in ("layer_types", "no_rope_layers")})
    config._attn_implementation = "eager"
    return config


def build(architecture: str, seed: int = 0):
    """The seeded tiny model (norm gains randomised, as in ``families.build_family``), in eval mode."""
    import transformers

    config = tiny_config(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, architecture)(config)
        for name, param in model.named_parameters():
            if "norm" in name.lower() or "ln" in name.lower():
                with torch.no_grad():
                    param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def sweep_table(outcomes: dict[str, tuple[str, str]]) -> str:
    """Markdown: one row per architecture of the sweep, with its outcome and why."""
    counts: dict[str, int] = {}
    lines = ["| architecture | outcome | detail |", "|---|---|---|"]
    for architecture in sorted(outcomes):
        outcome, detail = outcomes[architecture]
        counts[outcome] = counts.get(outcome, 0) + 1
        lines.append(f"| {architecture} | {outcome} | {detail.replace('|', '/')} |")
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    return "\n".join([f"{len(outcomes)} causal-LM architectures of the installed bridge: {summary}.", "", *lines])


def verify(architecture: str, folder) -> tuple[str, str]:
    """Build, save and load one architecture's tiny model: ("refused at load" | "verified" | "skipped", detail).

    Asserts what must hold whatever the model: a refusal is one line; every analysis whose identities failed is
    refused by the engine naming the identity; the overview (every weight accessor) and ReAGent run when allowed."""
    from pathlib import Path

    import pytest

    import workbench as wb
    from workbench.engine.registry import list_analyses
    from workbench.models.tiny import byte_tokenizer

    try:
        hf_model = build(architecture)
    except Exception as exc:  # a config whose defaults cannot be shrunk generically
        return "skipped", f"no tiny config ({type(exc).__name__})"
    hf_model.save_pretrained(folder)
    byte_tokenizer(Path(folder).parent / ".tokenizer").save_pretrained(folder)
    try:
        model = wb.load_model(folder, progress=False)
    except (wb.UnsupportedModelError, wb.ModelLoadError) as exc:
        message = str(exc).replace(str(folder), "the model")
        return "refused at load", message.split(";")[0].splitlines()[0][:200]
    assert model.facts.checks is not None
    failed = sorted(n for n, i in model.facts.checks.identities.items() if not i.passed)
    allowed = [a for a in list_analyses() if not set(a.needs) & set(failed)]
    for spec in list_analyses():
        if spec not in allowed:
            with pytest.raises(wb.UnsupportedModelError, match="relies on"):
                model.require_identities(spec.needs, spec.title)
    names = {a.name for a in allowed}
    if "overview" in names:
        assert isinstance(wb.model_overview(model, cache=False), wb.Result)
    if "reagent" in names:
        assert isinstance(wb.reagent(model, prompt="The cat sat on", max_steps=2, cache=False), wb.Result)
    decomposing = [a for a in allowed if a.needs != ("logits",)]
    return "self-checked", f"{len(decomposing)} of {sum(a.needs != ('logits',) for a in list_analyses())} decomposing " \
        "analyses allowed" + (f"; unverified: {', '.join(failed)}" if failed else "; every identity holds")
