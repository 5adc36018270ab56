"""``wb.load_model`` from each kind of source: GGUF file, HF folder, hub id (offline), dtype.

Tiny models only: each is written to a temp folder (or a temp ``.gguf``) and loaded back
through the workbench; the results are compared with the original HF model.
"""

from __future__ import annotations

import json
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.models import gguf as wb_gguf
from workbench.models.tiny import BOS_ID, byte_tokenizer, tiny_model

from support.gguf_writer import write_tiny_gguf

PROMPTS = ["Hello, workbench!", "a", " two  spaces\tand a tab\n", "héllo wörld ✓ 日本"]
TOL = 1e-5


def _ids(text: str) -> list[int]:
    """The byte tokenizer's ids, computed independently: BOS, then the UTF-8 bytes."""
    return [BOS_ID, *text.encode("utf-8")]


@torch.no_grad()
def _reference(hf_model) -> dict[str, torch.Tensor]:
    return {p: hf_model(torch.tensor([_ids(p)])).logits for p in PROMPTS}


def _load(source, cache_dir, **kwargs):
    return wb.load_model(source, cache_dir=cache_dir, progress=False, device="cpu", **kwargs)


def _assert_logits_match(model, reference: dict[str, torch.Tensor]) -> None:
    for prompt, ref in reference.items():
        tokens = model.to_tokens(prompt)
        assert tokens.tolist() == [_ids(prompt)], prompt
        with torch.no_grad():
            ours = model(tokens).cpu()
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= TOL, prompt


def _converted(cache: Path, stem: str) -> list[Path]:
    models = cache / "models"
    return sorted(p for p in models.iterdir() if p.name.startswith(f"{stem}-")) if models.is_dir() else []


# ------------------------------------------------------------------ GGUF files
@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory):
    """A tiny llama written as GGUF, with reference logits taken before any workbench load."""
    hf = tiny_model("tiny-llama", seed=7)
    path = write_tiny_gguf(hf, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return path, hf, _reference(hf)


@pytest.fixture(scope="module")
def gguf_loaded(llama_gguf, tmp_path_factory):
    """First load of the GGUF into a fresh cache, counting dequantizations."""
    path, hf, ref = llama_gguf
    cache = tmp_path_factory.mktemp("cache")
    before = _converted(cache, path.stem)
    calls = []
    real = wb_gguf._dequantize_into
    mp = pytest.MonkeyPatch()
    mp.setattr(wb_gguf, "_dequantize_into", lambda *a: (calls.append(a), real(*a))[1])
    try:
        model = _load(path, cache)
    finally:
        mp.undo()
    return model, cache, before, len(calls)


def test_gguf_logits_equal_hf(gguf_loaded, llama_gguf):
    model, *_ = gguf_loaded
    _assert_logits_match(model, llama_gguf[2])
    assert model.facts.source == "gguf" and model.facts.name == "tiny"


def test_gguf_weights_equal_hf(gguf_loaded, llama_gguf):
    """Q/K rows come back in HF order: llama.cpp's permutation was undone exactly."""
    model, *_ = gguf_loaded
    theirs = dict(llama_gguf[1].named_parameters())
    # the bridge wraps each HF module; its parameters keep their HF names under `_original_component`
    ours = {n.replace("._original_component", ""): p for n, p in model.hf_model.named_parameters()}
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name].cpu(), tensor), name


def test_gguf_info(gguf_loaded):
    i = gguf_loaded[0].facts
    assert (i.n_layers, i.d_model, i.n_heads, i.n_kv_heads, i.d_head, i.d_mlp, i.d_vocab) == (2, 64, 4, 2, 16, 128, 259)
    assert i.mlp == "gated" and not i.tied_embeddings and i.dtype == "float32"
    assert (i.bos_token, i.eos_token) == ("<bos>", "<eos>")


def test_gguf_tokenizer_round_trips(gguf_loaded):
    model, *_ = gguf_loaded
    for text in PROMPTS:
        ids = model.to_tokens(text, prepend_bos=False)
        assert ids.tolist() == [_ids(text)[1:]]
        assert model.decode(ids) == text
    assert model.to_str_tokens("hi") == ["<bos>", "h", "i"]
    tok = model.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258)


def test_gguf_converted_once_into_cache(gguf_loaded, llama_gguf):
    path = llama_gguf[0]
    model, cache, before, n_calls = gguf_loaded
    assert before == [] and n_calls == 1
    (folder,) = _converted(cache, path.stem)
    assert folder.name == f"{path.stem}-{wb_gguf.content_key(path)}"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    # the weights are plain floats now: the folder must not claim to be a GGUF quantization
    assert json.loads((folder / "config.json").read_text()).get("quantization_config") is None
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".tmp-")]


def test_gguf_second_load_reuses_cache(gguf_loaded, llama_gguf, monkeypatch):
    path, _, ref = llama_gguf
    cache = gguf_loaded[1]

    def no_dequantize(*args):
        raise AssertionError("dequantized again although the converted folder is cached")

    monkeypatch.setattr(wb_gguf, "_dequantize_into", no_dequantize)
    start = time.monotonic()
    model = _load(path, cache)
    assert time.monotonic() - start < 30
    _assert_logits_match(model, ref)
    assert len(_converted(cache, path.stem)) == 1


@pytest.mark.parametrize("damage", ["delete weights", "truncate weights", "delete config"])
def test_gguf_damaged_conversion_is_rebuilt(llama_gguf, tmp_path, damage):
    path, _, ref = llama_gguf
    _load(path, tmp_path)
    (folder,) = _converted(tmp_path, path.stem)
    weights = folder / "model.safetensors"
    if damage == "delete weights":
        weights.unlink()
    elif damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        (folder / "config.json").unlink()
    with pytest.warns(UserWarning, match="rebuilding"):
        model = _load(path, tmp_path)
    _assert_logits_match(model, ref)
    assert _converted(tmp_path, path.stem) == [folder]
    assert (folder / "config.json").is_file() and weights.is_file()
    # and the rebuilt copy is good: the next load neither warns nor converts
    calls = []
    real = wb_gguf._dequantize_into
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(wb_gguf, "_dequantize_into", lambda *a: (calls.append(a), real(*a))[1])
            _load(path, tmp_path)
    assert calls == []


@pytest.mark.parametrize("cut", ["empty", "magic only", "half", "last bytes"])
def test_corrupt_gguf_raises_model_load_error(llama_gguf, tmp_path, cut):
    data = llama_gguf[0].read_bytes()
    keep = {"empty": 0, "magic only": 4, "half": len(data) // 2, "last bytes": len(data) - 64}[cut]
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(data[:keep])
    cache = tmp_path / "cache"
    with pytest.raises(wb.ModelLoadError) as info:
        _load(bad, cache)
    message = str(info.value)
    assert "broken.gguf" in message and "GGUF" in message
    assert "Traceback" not in message and len(message) < 2000
    # nothing half-built is left behind to be mistaken for a conversion
    assert _converted(cache, "broken") == []
    leftovers = list((cache / "models").glob(".tmp-*")) if (cache / "models").is_dir() else []
    assert leftovers == []


def test_not_a_gguf_raises_model_load_error(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are my notes, not a model\n" * 50)
    with pytest.raises(wb.ModelLoadError, match="notes.gguf"):
        _load(bad, tmp_path / "cache")


def test_missing_gguf_raises_model_load_error(tmp_path):
    with pytest.raises(wb.ModelLoadError, match="not found"):
        _load(tmp_path / "absent.gguf", tmp_path / "cache")


# ------------------------------------------------------------------ HF folders
def _save(name: str, seed: int, folder: Path, cache: Path):
    hf = tiny_model(name, seed=seed)
    hf.save_pretrained(folder)
    byte_tokenizer(cache).save_pretrained(folder)
    return hf


def _folder_model(name: str, seed: int, root: Path):
    """``(workbench model, original HF model, reference logits)`` for a tiny model saved to a folder."""
    hf = _save(name, seed, root / f"{name}-folder", root / "cache")
    ref = _reference(hf)
    return _load(root / f"{name}-folder", root / "cache"), hf, ref


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return _folder_model("tiny-llama", 3, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return _folder_model("tiny-gpt2", 4, tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("which, name", [("llama_folder", "tiny-llama-folder"), ("gpt2_folder", "tiny-gpt2-folder")])
def test_folder_logits_equal_hf(which, name, request):
    model, _, ref = request.getfixturevalue(which)
    _assert_logits_match(model, ref)
    assert (model.facts.source, model.facts.name) == ("folder", name)


def test_folder_llama_info(llama_folder):
    i = llama_folder[0].facts
    assert i.architecture == "LlamaForCausalLM"
    assert (i.n_layers, i.d_model, i.n_heads, i.n_kv_heads, i.d_head, i.d_mlp) == (2, 64, 4, 2, 16, 128)
    assert i.mlp == "gated" and i.grouped_query and i.heads_per_kv == 2 and i.norm == "rms"
    assert i.n_params == sum(p.numel() for p in llama_folder[1].parameters())


def test_folder_gpt2_info(gpt2_folder):
    i = gpt2_folder[0].facts
    assert i.architecture == "GPT2LMHeadModel"
    assert (i.n_layers, i.d_model, i.n_heads, i.n_kv_heads, i.d_head, i.d_mlp) == (2, 64, 4, 4, 16, 256)
    assert i.mlp == "plain" and not i.grouped_query and i.norm == "layernorm"


def test_folder_llama_weights(llama_folder):
    model, hf, _ = llama_folder
    cfg = hf.config
    n_heads, n_kv, d_model = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    d_head = d_model // n_heads
    for layer in range(cfg.num_hidden_layers):
        attn, mlp = hf.model.layers[layer].self_attn, hf.model.layers[layer].mlp
        w = model.attention_weights(layer)
        assert w.W_Q.shape == (n_heads, d_model, d_head) and w.W_K.shape == (n_kv, d_model, d_head)
        assert w.W_O.shape == (n_heads, d_head, d_model)
        q = attn.q_proj.weight.view(n_heads, d_head, d_model)
        k = attn.k_proj.weight.view(n_kv, d_head, d_model)
        v = attn.v_proj.weight.view(n_kv, d_head, d_model)
        o = attn.o_proj.weight.view(d_model, n_heads, d_head)
        for h in range(n_heads):
            assert torch.equal(w.W_Q[h].cpu(), q[h].T), (layer, h)
            assert torch.equal(w.W_O[h].cpu(), o[:, h, :].T), (layer, h)
        for kv in range(n_kv):
            assert torch.equal(w.W_K[kv].cpu(), k[kv].T), (layer, kv)
            assert torch.equal(w.W_V[kv].cpu(), v[kv].T), (layer, kv)
        assert all(b is None for b in (w.b_Q, w.b_K, w.b_V, w.b_O))
        expanded = model.attention_weights(layer, expand_kv=True)
        for h in range(n_heads):  # query head h reads kv head h // heads_per_kv
            assert torch.equal(expanded.W_K[h].cpu(), k[h // (n_heads // n_kv)].T)
            assert torch.equal(expanded.W_V[h].cpu(), v[h // (n_heads // n_kv)].T)
        m = model.mlp_weights(layer)
        assert torch.equal(m.W_gate.cpu(), mlp.gate_proj.weight.T)
        assert torch.equal(m.W_in.cpu(), mlp.up_proj.weight.T)
        assert torch.equal(m.W_out.cpu(), mlp.down_proj.weight.T)
        assert m.b_in is None and m.b_out is None
    assert model.W_Q.shape == (cfg.num_hidden_layers, n_heads, d_model, d_head)
    assert torch.equal(model.W_gate[1].cpu(), hf.model.layers[1].mlp.gate_proj.weight.T)


def test_folder_gpt2_weights(gpt2_folder):
    model, hf, _ = gpt2_folder
    cfg = hf.config
    n_heads, d_model = cfg.n_head, cfg.n_embd
    d_head = d_model // n_heads
    for layer in range(cfg.n_layer):
        block = hf.transformer.h[layer]
        c_attn_w, c_attn_b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: [d_model, 3 d_model]
        w = model.attention_weights(layer)
        assert w.W_Q.shape == w.W_K.shape == w.W_V.shape == (n_heads, d_model, d_head)
        for h in range(n_heads):
            cols = slice(h * d_head, (h + 1) * d_head)
            for i, (W, b) in enumerate([(w.W_Q, w.b_Q), (w.W_K, w.b_K), (w.W_V, w.b_V)]):
                part = slice(i * d_model + cols.start, i * d_model + cols.stop)
                assert torch.equal(W[h].cpu(), c_attn_w[:, part]), (layer, h, "QKV"[i])
                assert torch.equal(b[h].cpu(), c_attn_b[part]), (layer, h, "QKV"[i])
            assert torch.equal(w.W_O[h].cpu(), block.attn.c_proj.weight[cols, :]), (layer, h)
        assert torch.equal(w.b_O.cpu(), block.attn.c_proj.bias)
        m = model.mlp_weights(layer)
        assert m.W_gate is None
        assert torch.equal(m.W_in.cpu(), block.mlp.c_fc.weight) and torch.equal(m.b_in.cpu(), block.mlp.c_fc.bias)
        assert torch.equal(m.W_out.cpu(), block.mlp.c_proj.weight)
        assert torch.equal(m.b_out.cpu(), block.mlp.c_proj.bias)
    assert model.W_gate is None


@pytest.mark.parametrize("folder_name, missing, message", [
    ("no-config", "config.json", "config.json"),
    ("no-weights", "model.safetensors", "no-weights"),
])
def test_incomplete_folder_raises(tmp_path, folder_name, missing, message):
    folder = tmp_path / folder_name
    _save("tiny-llama", 0, folder, tmp_path / "cache")
    (folder / missing).unlink()
    with pytest.raises(wb.ModelLoadError, match=message):
        _load(folder, tmp_path / "cache")


# ------------------------------------------------------------------ hub ids, offline
@pytest.fixture
def offline(monkeypatch):
    """Offline mode on, and any attempt to open a connection recorded (and refused)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_hub_id_offline_fails_fast_with_alternatives(offline, tmp_path):
    start = time.monotonic()
    with pytest.raises(wb.ModelLoadError) as info:
        _load("some-org/some-model", tmp_path)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 10, f"took {elapsed:.1f} s to give up"
    assert "some-org/some-model" in message
    assert "embedded" in message.lower() and "smollm2" in message.lower()
    assert "gguf" in message.lower() and "tiny-llama" in message
    assert offline == []


@pytest.mark.parametrize("source", ["./does/not/exist", "/does/not/exist/either", "not a model id!"])
def test_missing_path_raises(offline, tmp_path, source):
    with pytest.raises(wb.ModelLoadError, match="unknown model"):
        _load(source, tmp_path)
    assert offline == []


# ------------------------------------------------------------------ dtype
def test_dtype_passes_through_folder_load(tmp_path):
    folder = tmp_path / "bf16"
    _save("tiny-llama", 0, folder, tmp_path / "cache")
    model = _load(folder, tmp_path / "cache", dtype="bfloat16")
    assert model.facts.dtype == "bfloat16"
    assert {p.dtype for p in model.hf_model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        logits = model("Hello")
    assert torch.isfinite(logits.float()).all()


def test_unknown_dtype_raises(tmp_path):
    with pytest.raises(wb.ModelLoadError, match="unknown dtype"):
        _load("tiny-llama", tmp_path, dtype="float8")


# ------------------------------------------------------------------ device_map (accelerate)
def test_device_map_is_passed_to_from_pretrained(llama_folder, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    _, hf, ref = llama_folder
    folder = tmp_path / "mapped"
    hf.save_pretrained(folder)
    byte_tokenizer(tmp_path / "cache").save_pretrained(folder)
    seen, original = [], AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = wb.load_model(folder, cache_dir=tmp_path / "cache", progress=False, device_map={"": "cpu"})
    assert seen == [{"": "cpu"}] and model.device.type == "cpu"
    _assert_logits_match(model, ref)
