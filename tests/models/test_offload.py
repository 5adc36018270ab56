"""A model bigger than memory: accelerate's ``device_map`` / ``max_memory`` / disk offload under the hooked
model. A tiny model forced onto disk gives the in-memory run's results, edits (super-weight ablations)
included, for every activation analysis."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import workbench as wb
from support.families import PROMPT, save_family

FAST = dict(cache=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same planted checkpoint in memory and with its layers offloaded to disk (under a 250 kB cap)."""
    root = tmp_path_factory.mktemp("offload")
    folder = save_family("llama", root / "llama")
    planted = wb.load_model(folder, progress=False)
    mlp = planted.mlp_weights(0)
    with torch.no_grad():  # a super weight: a massive hidden channel 7 written into residual channel 11
        mlp.W_in[:, 7] *= 40.0
        mlp.W_out[7, 11] = 25.0
    planted_folder = planted.save(root / "planted")
    memory = wb.load_model(planted_folder, progress=False)
    disk = wb.load_model(planted_folder, progress=False, device_map="auto", max_memory={"cpu": 250_000},
                         offload_folder=root / "offload")
    return memory, disk


def assert_same(a: wb.Result, b: wb.Result) -> None:
    assert a.fingerprint == b.fingerprint and a.meta == b.meta
    for key in a.tensors:  # exactly equal (NaN where the analysis leaves a position out)
        torch.testing.assert_close(a.tensors[key], b.tensors[key], rtol=0, atol=0, equal_nan=True)
    for key in a.tables:
        pd.testing.assert_frame_equal(a.tables[key], b.tables[key])


def test_layers_are_on_disk_and_read_back(pair):
    memory, disk = pair
    assert disk.offloaded and "disk" in set(disk.hf_model.hf_device_map.values())
    assert disk.device == torch.device("cpu")
    assert disk.fingerprint() == memory.fingerprint()
    assert torch.equal(disk(PROMPT), memory(PROMPT))
    for layer in range(memory.facts.n_layers):
        assert torch.equal(disk.mlp_weights(layer).W_out, memory.mlp_weights(layer).W_out)
        assert torch.equal(disk.attention_weights(layer).W_Q, memory.attention_weights(layer).W_Q)
    assert all(p.device.type == "meta" for p in disk.hf_model.model.layers[1].parameters())  # dropped after the read


def test_edits_reach_offloaded_weights_and_are_undone(pair):
    memory, disk = pair
    intact = disk(PROMPT)
    W_out = disk.mlp_weights(0).W_out
    with disk.restoring(W_out), torch.no_grad():
        W_out[7, 11] = 0.0
        edited = disk(PROMPT)
    assert not torch.equal(edited, intact)
    W_ref = memory.mlp_weights(0).W_out
    with memory.restoring(W_ref), torch.no_grad():
        W_ref[7, 11] = 0.0
        assert torch.equal(memory(PROMPT), edited)
    assert torch.equal(disk(PROMPT), intact)  # restored


def test_activation_analyses_equal_the_in_memory_run(pair):
    memory, disk = pair
    runs = {
        "super weights": lambda m: wb.super_weights(m, prompts=(PROMPT,), eval_windows=2, window=32, **FAST),
        "trace": lambda m: wb.trace_super_weight(m, weight=(0, 11, 7), prompt=PROMPT, **FAST),
        "head effects": lambda m: wb.head_effects(m, prompts=(PROMPT,), n_writers=1, **FAST),
        "ReAGent": lambda m: wb.reagent(m, prompt=PROMPT, max_steps=10, **FAST),
    }
    for name, run in runs.items():
        expected, got = run(memory), run(disk)
        assert_same(expected, got)
        if name == "super weights":
            assert (0, 11, 7) in got.coordinates()


def test_placement_options_need_a_device_map(tmp_path):
    with pytest.raises(wb.ModelLoadError, match="device_map"):
        wb.load_model("tiny-llama", max_memory={"cpu": "1GiB"})
