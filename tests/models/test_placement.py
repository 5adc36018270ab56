"""A device map that mixes a GPU with CPU or disk offload is refused at load, by the workbench, saying what to do
instead (TransformerLens's bridge refuses it too, later and less helpfully). Tested without a GPU: a dict map is
refused before anything loads, and a map accelerate would have made is refused before the bridge boots. Whether
such a map would run right on a GPU is what benchmarks/device_check.py records on a machine that has one."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from support.families import build_family, save_family
from workbench.models import loading
from workbench.models.placement import mixes_gpu_and_offload
from workbench.models.tiny import byte_tokenizer


@pytest.mark.parametrize("values, mixed", [
    ([0, "cpu"], True), (["cuda:0", "disk"], True), ([0, 1, "disk"], True), ([torch.device("cuda", 0), "cpu"], True),
    ([0, 1], False), (["cpu", "disk"], False), (["cpu"], False), (["cuda:1", 0], False),
])
def test_which_maps_mix_a_gpu_with_offload(values, mixed):
    assert mixes_gpu_and_offload(values) is mixed


def test_a_mixed_dict_map_is_refused_before_anything_loads(tmp_path, monkeypatch):
    folder = save_family("llama", tmp_path / "llama")
    monkeypatch.setattr(loading, "load_hf", lambda *a, **k: pytest.fail("loaded before refusing"))
    device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.norm": "cpu",
                  "lm_head": "cpu", "model.rotary_emb": 0}
    with pytest.raises(wb.UnsupportedModelError, match=r"3 module\(s\) on a GPU, 3 in CPU memory.*GPUs only.*"
                                                       r"CPU memory and disk only.*load_weights"):
        wb.load_model(folder, progress=False, device_map=device_map)


def test_a_mixed_map_accelerate_made_is_refused_before_the_bridge_boots(tmp_path, monkeypatch):
    hf = build_family("llama")
    hf.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "disk", "lm_head": "cpu"}
    tokenizer = byte_tokenizer(tmp_path)
    with pytest.raises(wb.UnsupportedModelError, match=r"accelerate placed 2 module\(s\) on a GPU, 1 in CPU memory, "
                                                       r"1 on disk.*max_memory=\{'cpu'"):
        loading.from_hf(hf, tokenizer, "mixed")
    # negative control: without the workbench's own check the bridge refuses, with no way out named
    monkeypatch.setattr(loading, "check_placement", lambda hf_model: None)
    with pytest.raises(wb.ModelLoadError, match="mixes CPU/disk offload targets with a GPU") as refused:
        loading.from_hf(hf, tokenizer, "mixed")
    assert "load_weights" not in str(refused.value)


def test_maps_without_a_gpu_still_load(tmp_path):
    hf = build_family("llama")
    hf.hf_device_map = {"": "cpu"}  # accelerate's record of a model dispatched whole to the CPU
    model = loading.from_hf(hf, byte_tokenizer(tmp_path), "cpu-map")
    assert model.facts.n_layers == 2
