"""Real tier: the embedded SmolLM2-135M-Instruct against the plain HF model it came from."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from support.hf_layout import assert_llama_layer_matches
from workbench.models import gguf
from workbench.models import hook_names as hn

pytestmark = pytest.mark.real

PROMPTS = ["The capital of France is", "Summer is hot. Winter is", "def fibonacci(n):\n    return"]


@pytest.fixture(scope="module")
def converted_folder(embedded):
    from workbench._paths import cache_root

    (folder,) = (cache_root() / "models").glob(f"{gguf.embedded_gguf_path().stem}-*")
    return folder


@pytest.fixture(scope="module")
def hf_reference(converted_folder):
    """An independent HF model read from the converted folder (never booted by the bridge)."""
    from transformers import AutoModelForCausalLM

    # Eager attention, as the hooked bridge runs (it needs explicit attention patterns);
    # SDPA differs from both by float32 rounding (~3e-5 on these logits).
    return AutoModelForCausalLM.from_pretrained(converted_folder, attn_implementation="eager").eval()


def test_facts(embedded):
    i = embedded.facts
    assert (i.architecture, i.n_layers, i.d_model, i.n_heads, i.n_kv_heads, i.d_head, i.d_mlp, i.d_vocab) == (
        "LlamaForCausalLM", 30, 576, 9, 3, 64, 1536, 49152)
    assert i.mlp == "gated" and i.tied_embeddings and i.source == "embedded" and i.n_params == 134_515_008


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_equal_hf(embedded, hf_reference, prompt):
    tokens = embedded.to_tokens(prompt)
    with torch.no_grad():
        ours, ref = embedded(tokens), hf_reference(tokens).logits
    assert (ours - ref).abs().max().item() <= 1e-5


def test_knows_a_fact(embedded):
    assert embedded.generate("The capital of France is", max_new_tokens=3, prepend_bos=False).strip().startswith("Paris")


def test_mlp_hook_post_is_down_proj_input(embedded, hf_reference):
    tokens = embedded.to_tokens(PROMPTS[1])
    seen = {}
    hooks = [hf_reference.model.layers[l].mlp.down_proj.register_forward_pre_hook(
        lambda _m, args, l=l: seen.__setitem__(l, args[0])) for l in (0, 2, 29)]
    try:
        with torch.no_grad():
            hf_reference(tokens)
    finally:
        for h in hooks:
            h.remove()
    _, cache = embedded.run_with_cache(tokens, names=[hn.mlp_post(l) for l in (0, 2, 29)])
    for l in (0, 2, 29):
        assert (cache[hn.mlp_post(l)] - seen[l]).abs().max().item() <= 1e-5


def test_weights_equal_hf_parameters(embedded, hf_reference):
    for l in range(30):
        a, m = embedded.attention_weights(l), embedded.mlp_weights(l)
        assert_llama_layer_matches(a, m, hf_reference.model.layers[l], n_heads=9, n_kv=3, d_head=64, d_model=576)
    assert torch.equal(embedded.W_E, hf_reference.model.embed_tokens.weight)
    assert torch.equal(embedded.W_U, hf_reference.model.embed_tokens.weight.T)  # tied
    assert embedded.W_K.shape == (30, 3, 576, 64) and embedded.W_out.shape == (30, 1536, 576)


def test_grouped_query_expansion(embedded):
    layer = 5
    names = [f"blocks.{layer}.ln1.hook_out", hn.attn_pattern(layer), hn.attn_z(layer)]
    _, cache = embedded.run_with_cache(PROMPTS[0], names=names)
    w = embedded.attention_weights(layer, expand_kv=True)
    v = torch.einsum("bpd,hde->bhpe", cache[names[0]], w.W_V)
    z = torch.einsum("bhqk,bhke->bqhe", cache[names[1]], v)
    assert (z - cache[names[2]]).abs().max().item() <= 1e-4
    raw = embedded.attention_weights(layer).W_V
    assert all(torch.equal(w.W_V[h], raw[h // 3]) for h in range(9))


def test_second_load_reuses_the_converted_model(embedded, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("the GGUF was dequantized again")

    monkeypatch.setattr(gguf, "_dequantize_into", no_conversion)
    again = wb.load_model()
    assert again.fingerprint() == embedded.fingerprint()


def test_overview_on_the_embedded_model(embedded):
    result = wb.model_overview(embedded)
    table = result.to_frame("matrices")
    assert len(table) == 30 * 7
    assert result.tensors["sv/W_out"].shape == (30, 576)
    # The largest single weight relative to its matrix sits in an early down projection (the super-weight layer).
    top = table.sort_values("outlier_ratio", ascending=False).iloc[0]
    assert top["outlier_ratio"] > 20
