"""The hooked wrapper on tiny random models: logits, tokens, hooks, weights, errors."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from support.hf_layout import assert_llama_layer_matches
from workbench.models import hook_names as hn
from workbench.models.tiny import BOS_ID, tiny_model


def _reference_logits(name: str, tokens: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Logits of an independently built HF model with the same seed (no bridge involved)."""
    with torch.no_grad():
        return tiny_model(name, seed=seed)(tokens).logits


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_logits_equal_plain_hf_model(name):
    model = wb.load_model(name)
    tokens = model.to_tokens("Hello, workbench!")
    with torch.no_grad():
        ours = model(tokens)
    assert ours.shape == (1, tokens.shape[1], model.facts.d_vocab)
    assert (ours - _reference_logits(name, tokens)).abs().max() <= 1e-5


def test_seed_decides_weights():
    a, b, c = (wb.load_model("tiny-llama", seed=s) for s in (0, 0, 1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_architecture_facts(tiny_llama, tiny_gpt2):
    i = tiny_llama.facts
    assert (i.n_layers, i.d_model, i.n_heads, i.n_kv_heads, i.d_head, i.d_mlp) == (2, 64, 4, 2, 16, 128)
    assert i.mlp == "gated" and i.grouped_query and i.heads_per_kv == 2 and i.norm == "rms"
    g = tiny_gpt2.facts
    assert g.mlp == "plain" and not g.grouped_query and g.norm == "layernorm" and g.tied_embeddings
    assert i.n_params == sum(p.numel() for p in tiny_llama.hf_model.parameters())


def test_one_fact_record(tiny_llama):
    """Shape and family facts are one record, each fact held once; ``info`` and ``arch`` are the same object."""
    import dataclasses
    import json

    facts = tiny_llama.facts
    assert isinstance(facts, wb.ModelFacts) and tiny_llama.info is facts and tiny_llama.arch is facts
    fields = {f.name for f in dataclasses.fields(facts)}
    assert not fields & {"gated_mlp", "normalization", "positional_embedding", "n_heads", "n_kv_heads", "d_head"}
    assert (facts.n_heads, facts.n_kv_heads, facts.d_head) == (facts.layers[0].n_heads, facts.layers[0].n_kv_heads,
                                                                facts.layers[0].d_head)
    d = facts.to_dict()
    assert d == json.loads(json.dumps(d)) and d["n_heads"] == 4 and d["checks"]["qkv"].startswith("passed")
    assert "checks" not in facts.to_dict(checks=False)
    lines = dict(facts.describe())
    assert lines["architecture"].startswith("LlamaForCausalLM: 2 layers") and lines["norms"] == "pre, rms"
    assert "check: qkv" in lines and "check: qkv" not in dict(facts.describe(checks=False))
    one = facts.for_layers([1])
    assert one.n_layers == 1 and one.layers == facts.layers[1:] and one.attention.sliding_window == (None,)


def test_nothing_in_the_package_reads_the_aliases():
    """``model.info`` and ``model.arch`` are kept for user code only: the package reads ``facts``."""
    import ast
    from pathlib import Path

    root = Path(wb.__file__).parent
    own_arch = {"analyses/bilinear/layers.py", "analyses/bilinear/training.py", "analyses/bilinear/spectrum.py"}
    offenders = []
    for path in root.rglob("*.py"):
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr in ("info", "arch")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("log", "logger", "logging"):
                continue
            if node.attr == "arch" and where in own_arch:  # the bilinear models' own config dict, not a model's facts
                continue
            offenders.append(f"{where}:{node.lineno}")
    assert not offenders, offenders


def test_bos_is_explicit(tiny_llama):
    with_bos = tiny_llama.to_tokens("ab", prepend_bos=True)[0].tolist()
    without = tiny_llama.to_tokens("ab", prepend_bos=False)[0].tolist()
    assert with_bos == [BOS_ID, ord("a"), ord("b")] and without == [ord("a"), ord("b")]
    assert tiny_llama.to_tokens("ab")[0].tolist() == with_bos  # default follows TransformerLens
    assert tiny_llama.to_str_tokens("ab") == ["<bos>", "a", "b"]


def test_batch_tokens_are_right_padded(tiny_llama):
    ids, mask = tiny_llama.to_tokens_batch(["a", "abc"], prepend_bos=False)
    assert ids.shape == mask.shape == (2, 3)
    assert mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert ids[1].tolist() == [ord(c) for c in "abc"]


def test_bad_prompts_raise_clear_errors(tiny_llama):
    with pytest.raises(wb.InputError, match="empty"):
        tiny_llama("")
    with pytest.raises(wb.InputError, match="context of 256"):
        tiny_llama("x" * 300)
    with pytest.raises(wb.InputError, match="token ids"):
        tiny_llama(torch.tensor([[1, 999]]))


def test_run_with_cache_keeps_only_requested_hooks(tiny_llama):
    names = [hn.mlp_post(0), hn.resid_post(1)]
    logits, cache = tiny_llama.run_with_cache("abc", names=names)
    assert list(cache) == names  # exactly what was asked for, no aliases
    assert cache[hn.resid_post(1)].shape == (1, 4, 64)
    assert logits.shape == (1, 4, 259)


def test_unknown_hook_name_suggests_fix(tiny_llama):
    with pytest.raises(wb.InputError, match="did you mean blocks.0.mlp.hook_post"):
        tiny_llama.run_with_cache("abc", names=["blocks.0.mlp.hook_pots"])


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_mlp_hook_post_is_down_projection_input(fixture, request):
    model = request.getfixturevalue(fixture)
    down = model.bridge.blocks[1].mlp.out.original_component
    seen = {}
    handle = down.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        _, cache = model.run_with_cache("hooks!", names=[hn.mlp_post(1)])
    finally:
        handle.remove()
    assert torch.equal(cache[hn.mlp_post(1)], seen["x"])


def test_weights_equal_hf_parameters_llama(tiny_llama):
    layer = tiny_llama.hf_model.model.layers[1]
    a, m = tiny_llama.attention_weights(1), tiny_llama.mlp_weights(1)
    assert_llama_layer_matches(a, m, layer, n_heads=4, n_kv=2, d_head=16, d_model=64)
    assert a.b_Q is None and m.b_out is None
    assert tiny_llama.W_Q.shape == (2, 4, 64, 16) and tiny_llama.W_K.shape == (2, 2, 64, 16)
    assert torch.equal(tiny_llama.W_E, tiny_llama.hf_model.model.embed_tokens.weight)
    assert torch.equal(tiny_llama.W_U, tiny_llama.hf_model.lm_head.weight.T)


def test_weights_equal_hf_parameters_gpt2(tiny_gpt2):
    block = tiny_gpt2.hf_model.transformer.h[0]
    a, m = tiny_gpt2.attention_weights(0), tiny_gpt2.mlp_weights(0)
    q, k, v = block.attn.c_attn.weight.split(64, dim=1)  # Conv1D: [d_model, 3 * d_model]
    assert torch.equal(a.W_Q, q.view(64, 4, 16).transpose(0, 1))
    assert torch.equal(a.W_V, v.view(64, 4, 16).transpose(0, 1))
    assert torch.equal(a.b_K, block.attn.c_attn.bias.split(64)[1].view(4, 16))
    assert torch.equal(m.W_in, block.mlp.c_fc.weight) and torch.equal(m.W_out, block.mlp.c_proj.weight)
    assert m.W_gate is None and tiny_gpt2.W_gate is None


def test_grouped_query_expansion_matches_the_forward_pass(tiny_llama):
    """Each query head's mixed values (hook_z) come from the K/V head expand_kv assigns it."""
    x_name, z_name, p_name = "blocks.0.ln1.hook_out", hn.attn_z(0), hn.attn_pattern(0)
    _, cache = tiny_llama.run_with_cache("grouped query", names=[x_name, z_name, p_name])
    w = tiny_llama.attention_weights(0, expand_kv=True)
    assert w.W_V.shape == (4, 64, 16)
    v = torch.einsum("bpd,hde->bhpe", cache[x_name], w.W_V)  # values per query head
    z = torch.einsum("bhqk,bhke->bqhe", cache[p_name], v)
    assert torch.allclose(z, cache[z_name], atol=1e-5)
    raw = tiny_llama.attention_weights(0).W_V
    assert [wb.models.kv_head_of(h, 2) for h in range(4)] == [0, 0, 1, 1]
    assert torch.equal(w.W_V[1], raw[0]) and torch.equal(w.W_V[2], raw[1])


def test_fingerprint_tracks_weight_edits():
    model = wb.load_model("tiny-llama")
    before = model.fingerprint()
    w = model.mlp_weights(0).W_out
    old = w[3, 5].item()
    with torch.no_grad():
        w[3, 5] = old + 0.5
    edited = model.fingerprint()
    with torch.no_grad():
        w[3, 5] = old
    assert edited != before and model.fingerprint() == before


def test_hooks_context_removes_hooks_even_on_error(tiny_llama):
    calls = []

    def spy(act, hook):
        calls.append(act.shape)

    with pytest.raises(RuntimeError):
        with tiny_llama.hooks([(hn.resid_post(0), spy)]):
            tiny_llama("abc")
            raise RuntimeError("boom")
    tiny_llama("abc")
    assert len(calls) == 1


def test_hook_can_edit_activations(tiny_llama):
    clean = tiny_llama("abc")
    zeroed = tiny_llama.run_with_hooks("abc", [(hn.mlp_out(1), lambda act, hook: act * 0)])
    assert not torch.allclose(clean, zeroed)
    assert torch.allclose(tiny_llama("abc"), clean)


def test_unknown_models_fail_with_what_to_do():
    with pytest.raises(wb.ModelLoadError, match="tiny-llama"):
        wb.load_model("not a model name!")
    with pytest.raises(wb.ModelLoadError, match="unknown dtype"):
        wb.load_model("tiny-llama", dtype="float13")


def test_dtype_is_passed_through():
    model = wb.load_model("tiny-llama", dtype="bfloat16")
    assert model.facts.dtype == "bfloat16" and model("ab").dtype == torch.bfloat16


def test_nan_weights_are_named_not_crashed_on(tmp_path):
    model = wb.load_model("tiny-llama")
    with torch.no_grad():
        model.attention_weights(1).W_O[0, 0, 0] = float("nan")
    with pytest.raises(wb.UnsupportedModelError, match=r"model\.layers\.1\.self_attn\.o_proj\.weight"):
        wb.model_overview(model, cache=False)


def test_interrupted_conversion_leaves_nothing_behind(tmp_path):
    from workbench.models._atomic import atomic_folder

    def crash(folder):
        folder.mkdir()
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_folder(tmp_path / "model", crash)
    assert list(tmp_path.iterdir()) == []
    from workbench._tempnames import host

    orphan = tmp_path / f".tmp-model-{host()}-999999999-abcd"  # left by a process of this host killed outright
    orphan.mkdir()
    atomic_folder(tmp_path / "model", lambda folder: folder.mkdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_restoring_undoes_weight_edits_even_on_error():
    model = wb.load_model("tiny-llama")
    before, clean = model.fingerprint(), model("abc")
    W_out, W_Q = model.mlp_weights(1).W_out, model.attention_weights(0).W_Q
    with pytest.raises(KeyboardInterrupt):
        with model.restoring(W_out, W_Q), torch.no_grad():
            W_out.zero_()
            W_Q[2] *= 3
            assert not torch.allclose(model("abc"), clean)
            raise KeyboardInterrupt
    assert model.fingerprint() == before and torch.equal(model("abc"), clean)


def test_missing_weight_accessors_give_a_clear_error(monkeypatch):
    model = wb.load_model("tiny-llama")
    monkeypatch.setattr(type(model.bridge.blocks[0].mlp), "W_out", property(lambda self: None), raising=False)
    with pytest.raises(wb.UnsupportedModelError, match="no MLP W_out for LlamaForCausalLM"):
        model.mlp_weights(0)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_every_hook_name_helper_names_a_real_hook_point(fixture, request):
    model = request.getfixturevalue(fixture)
    helpers = [hn.resid_pre, hn.resid_mid, hn.resid_post, hn.attn_pattern, hn.attn_scores, hn.attn_z, hn.attn_out,
               hn.mlp_in, hn.mlp_pre, hn.mlp_post, hn.mlp_out, hn.attn_q, hn.attn_k, hn.attn_v]
    names = [helper(1) for helper in helpers] + [hn.EMBED]
    if fixture == "tiny_llama":  # rotary models expose the rotated queries and keys too
        names += [hn.attn_q(1, rotated=True), hn.attn_k(1, rotated=True)]
    for name in names:
        assert model.check_hook_name(name) == name


def test_norm_gains_are_the_hf_norm_weights(tiny_llama):
    base = tiny_llama.hf_model.model
    assert torch.equal(tiny_llama.norm_gain(1, "attn"), base.layers[1].input_layernorm.weight)
    assert torch.equal(tiny_llama.norm_gain(1, "mlp"), base.layers[1].post_attention_layernorm.weight)
    assert torch.equal(tiny_llama.norm_gain(None), base.norm.weight)
    with pytest.raises(wb.InputError, match="before"):
        tiny_llama.norm_gain(0, "ffn")
