"""``model.save(folder)``: a plain HF folder that reloads with the same weights, edits and fingerprint."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from support.families import save_family


@pytest.mark.parametrize("source", ["tiny-gpt2", "tiny-llama", "gemma2", "mixtral"])
def test_save_and_reload_keeps_weights_edits_and_fingerprint(source, tmp_path):
    model = wb.load_model(source if source.startswith("tiny") else save_family(source, tmp_path / source))
    with torch.no_grad():  # an edit made through the workbench's views travels with the model
        model.attention_weights(0).W_O[0, 0, 0] += 1.0
    folder = model.save(tmp_path / "saved")
    again = wb.load_model(folder)
    assert again.fingerprint() == model.fingerprint()
    ids = model.to_tokens("Hello there")
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    # cached results carry over: the reloaded model finds the saved one's result under the same key
    cache = wb.ResultCache(tmp_path / "cache")
    wb.model_overview(model, cache=cache)
    wb.model_overview(again, cache=cache)
    assert cache.stats["memory_hits"] == 1 and cache.stats["misses"] == 1


def test_save_refuses_a_folder_in_use(tiny_llama, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(wb.InputError, match="not an empty folder"):
        tiny_llama.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
