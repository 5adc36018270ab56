"""``wb.load_weights(folder)``: the weight-only analyses read straight from a checkpoint's shards and give
exactly what they give on the loaded model (same tensors, tables and fingerprint), family by family."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

import workbench as wb
from support.families import build_family, save_family
from workbench.cache import cache_key
from workbench.models.families import FAMILIES as KNOWN

FAMILIES = ("gemma", "gemma2", "gemma3", "granite", "llama", "mistral", "olmo", "olmo2", "olmo3", "qwen2", "qwen3",
            "smollm3")
FAST = ("llama", "qwen3", "gemma2", "olmo2")  # plain, q/k norms, sandwich norms, post-norm only


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


def pair(family: str, folders) -> tuple[wb.HookedModel, wb.CheckpointWeights]:
    folder = folders / family
    if not (folder / "config.json").exists():
        save_family(family, folder)
    return wb.load_model(folder, progress=False), wb.load_weights(folder)


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)


def assert_same_result(a: wb.Result, b: wb.Result) -> None:
    assert a.fingerprint == b.fingerprint and a.model_id == b.model_id and a.meta == b.meta
    assert a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.tables.keys() == b.tables.keys()
    for key in a.tables:
        pd.testing.assert_frame_equal(a.tables[key], b.tables[key], check_exact=True)


def test_every_layout_family_is_in_the_test():
    assert {"gemma3_text" if f == "gemma3" else f for f in FAMILIES} == {f for f, e in KNOWN.items() if e.layout}


@pytest.mark.parametrize("family", FAMILIES)
def test_facts_and_accessors_equal_the_loaded_model(family, folders):
    model, weights = pair(family, folders)
    assert weights.facts == replace(model.facts, checks=None)  # the config-only facts agree with the bridge's
    assert weights.fingerprint() == model.fingerprint()  # so cached results are shared
    assert dict(weights.parameter_sizes()) == dict(model.parameter_sizes())
    for layer in range(model.facts.n_layers):
        for accessor in ("attention_weights", "mlp_weights", "effective_attention_weights", "effective_mlp_weights"):
            mine, theirs = getattr(weights, accessor)(layer), getattr(model, accessor)(layer)
            for field in mine.__dataclass_fields__:
                assert same(getattr(mine, field), getattr(theirs, field)), (accessor, layer, field)
        for before in ("attn", "mlp"):
            assert same(weights.norm_gain(layer, before), model.norm_gain(layer, before))
            assert same(weights.output_norm_gain(layer, before), model.output_norm_gain(layer, before))
        mine, theirs = weights.qk_norm_gains(layer), model.qk_norm_gains(layer)
        assert (mine is None) == (theirs is None) and (mine is None or all(map(same, mine, theirs)))
    assert same(weights.W_E, model.W_E) and same(weights.W_U, model.W_U)
    assert same(weights.norm_gain(None), model.norm_gain(None))


@pytest.mark.parametrize("family", FAST)
def test_weight_analyses_equal_the_loaded_model(family, folders):
    model, weights = pair(family, folders)
    assert_same_result(wb.model_overview(weights, cache=False), wb.model_overview(model, cache=False))
    assert_same_result(wb.head_composition(weights, null_samples=8, cache=False),
                       wb.head_composition(model, null_samples=8, cache=False))


def test_sharded_bfloat16_checkpoint(tmp_path):
    """Several shards with an index, stored in bfloat16: read as stored, results equal, the cache shared."""
    from workbench.models.tiny import byte_tokenizer

    folder = tmp_path / "bf16"
    build_family("llama").to(torch.bfloat16).save_pretrained(folder, max_shard_size="100KB")
    byte_tokenizer(tmp_path / ".tokenizer").save_pretrained(folder)
    assert (folder / "model.safetensors.index.json").is_file()
    model, weights = wb.load_model(folder, progress=False), wb.load_weights(folder)
    assert weights.facts.dtype == "bfloat16" and weights.attention_weights(1).W_Q.dtype == torch.bfloat16
    cache = wb.ResultCache(tmp_path / "cache")
    from_shards = wb.head_composition(weights, null_samples=8, cache=cache)
    assert_same_result(from_shards, wb.head_composition(model, null_samples=8, cache=False))
    cache.clear(memory_only=True)
    key = cache_key("head_composition", from_shards.config, model.fingerprint(verify=True),
                    wb.get_analysis("head_composition").version)
    assert cache.get(key, "head_composition") is not None  # the loaded model finds what the shards computed


def test_other_families_and_non_weight_analyses_say_what_to_do(folders):
    save_family("gpt2", folders / "gpt2")
    with pytest.raises(wb.UnsupportedModelError, match="wb.load_model"):
        wb.load_weights(folders / "gpt2")
    _, weights = pair("llama", folders)
    with pytest.raises(wb.UnsupportedModelError, match="bilinear_replacement"):
        wb.bilinear_spectrum(weights)
    with pytest.raises(wb.ModelLoadError, match="config.json"):
        wb.load_weights(folders)


PEAK_SCRIPT = """
import sys
def peak_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
import torch, workbench as wb
weights = wb.load_weights(sys.argv[1])
before = peak_mb()
if sys.argv[2] == "mapped":  # the control: every tensor read through the shard's mapping, the shard kept open
    from safetensors import safe_open
    with safe_open(sys.argv[3], framework="pt") as shard:
        for name in shard.keys():
            shard.get_tensor(name).float().sum()
else:
    weights.fingerprint()
print(peak_mb() - before)
"""


def test_the_fingerprint_scan_holds_one_tensor_not_the_shard(tmp_path):
    """The scan hashes every byte of the checkpoint; it reads each tensor into a buffer of its own, so the peak
    resident memory grows by about the largest tensor, not by the shard (a mapped shard kept open grows it by the
    whole file: the control, measured the same way, must see that)."""
    import subprocess
    import sys

    import transformers

    from workbench.models.tiny import byte_tokenizer

    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                                      num_attention_heads=8, num_key_value_heads=8, vocab_size=300)
    folder = tmp_path / "ckpt"
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(folder)
    byte_tokenizer(tmp_path / ".tokenizer").save_pretrained(folder)
    shard = folder / "model.safetensors"
    shard_mb = shard.stat().st_size / 2**20  # ~67 MB; the largest tensor 2 MB

    def growth(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder), mode, str(shard)],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    assert growth("mapped") > 0.5 * shard_mb  # the measurement sees a shard's pages
    assert growth("scan") < 0.25 * shard_mb
