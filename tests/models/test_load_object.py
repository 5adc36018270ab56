"""``wb.load_model`` with a model already in memory, ``revision=`` / ``trust_remote_code=`` / ``dtype=`` reaching
``from_pretrained``, and the ``"mps"`` device where torch has it."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.cache import ResultCache
from workbench.models.loading import check_device
from workbench.models.tiny import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny llama in memory, its tokenizer, and the same saved to a folder: (hf_model, tokenizer, folder, cache)."""
    root = tmp_path_factory.mktemp("in-memory")
    hf = tiny_model("tiny-llama", seed=7)
    tokenizer = byte_tokenizer(root / "cache")
    folder = root / "fine-tune"
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return hf, tokenizer, folder, root / "cache"


def test_in_memory_model_is_the_saved_one(saved):
    hf, tokenizer, folder, cache = saved
    from_folder = wb.load_model(folder, device="cpu", cache_dir=cache, progress=False)
    in_memory = wb.load_model(hf, tokenizer=tokenizer)
    assert in_memory.facts.source == "memory"
    assert in_memory.fingerprint(verify=True) == from_folder.fingerprint(verify=True)
    fresh = [wb.model_overview(m, cache=False) for m in (from_folder, in_memory)]
    assert fresh[0].tables.keys() == fresh[1].tables.keys()
    for name in fresh[0].tables:
        assert fresh[0].tables[name].equals(fresh[1].tables[name]), name
    # one cache: what was computed for the folder's model is what the in-memory model gets
    store = ResultCache(cache / "shared")
    wb.model_overview(from_folder, cache=store)
    wb.model_overview(in_memory, cache=store)
    assert store.stats["misses"] == 1 and store.stats["memory_hits"] == 1


def test_in_memory_model_needs_its_tokenizer(saved):
    with pytest.raises(wb.ModelLoadError, match="pass tokenizer="):
        wb.load_model(saved[0])


@pytest.mark.parametrize("option", [{"revision": "main"}, {"trust_remote_code": True}, {"device_map": "auto"}])
def test_loading_options_with_a_model_object_are_refused(saved, option):
    with pytest.raises(wb.ModelLoadError, match=f"{next(iter(option))} apply while loading"):
        wb.load_model(saved[0], tokenizer=saved[1], **option)


def test_only_transformers_models_are_wrapped():
    with pytest.raises(wb.ModelLoadError, match="PreTrainedModel"):
        wb.load_model(torch.nn.Linear(2, 2), tokenizer=object())


def test_tokenizer_without_a_model_object_is_refused():
    with pytest.raises(wb.ModelLoadError, match="model object"):
        wb.load_model("tiny-llama", tokenizer=object())


class _Stop(Exception):
    pass


def _record_from_pretrained(monkeypatch) -> list[tuple[str, dict]]:
    """Replace both ``from_pretrained`` the loader calls with recorders that stop the load."""
    import transformers

    calls: list[tuple[str, dict]] = []

    def recorder(kind):
        def from_pretrained(ref, **kwargs):
            calls.append((kind, kwargs))
            if kind == "model":
                raise _Stop(ref)
            return object()
        return staticmethod(from_pretrained)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recorder("model"))
    return calls


@pytest.mark.parametrize("where", ["folder", "hub"])
def test_hub_options_reach_from_pretrained(saved, monkeypatch, where):
    calls = _record_from_pretrained(monkeypatch)
    source = saved[2] if where == "folder" else "someone/fine-tune"
    with pytest.raises(wb.ModelLoadError):  # the recorders stop the load (hub: then offline)
        wb.load_model(source, revision="v1.2", trust_remote_code=True, dtype="bfloat16", device="cpu", progress=False)
    (_, tok), (_, model) = calls[:2]
    assert tok["revision"] == model["revision"] == "v1.2"
    assert tok["trust_remote_code"] is model["trust_remote_code"] is True
    assert model["dtype"] is torch.bfloat16


def test_remote_code_is_off_by_default(saved, monkeypatch):
    calls = _record_from_pretrained(monkeypatch)
    with pytest.raises(wb.ModelLoadError):
        wb.load_model(saved[2], device="cpu", progress=False)
    assert [kwargs["trust_remote_code"] for _, kwargs in calls] == [False, False]
    assert all("revision" not in kwargs for _, kwargs in calls)


def test_revision_of_a_tiny_model_is_refused():
    with pytest.raises(wb.ModelLoadError, match="revision"):
        wb.load_model("tiny-llama", revision="main", progress=False)


def test_mps_where_torch_has_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert check_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(wb.ModelLoadError, match="MPS"):
        check_device("mps")
    with pytest.raises(wb.ModelLoadError, match="not supported"):
        check_device("meta")
