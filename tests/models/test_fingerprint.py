"""The fingerprint hashes the weights' bytes: edits that keep every sum and norm (swapped rows, columns, heads,
exchanged weights) change it, so a cached result is never served for an edited model."""

from __future__ import annotations

import os

import pytest
import torch

import workbench as wb
from workbench.models import fingerprint as fp
from workbench.models import gguf, hooked


def swap_rows(model):
    w = model.hf_model.model.layers[0].self_attn.q_proj.weight.data
    w[[3, 40]] = w[[40, 3]].clone()


def swap_columns(model):
    w = model.hf_model.model.layers[1].mlp.down_proj.weight.data
    w[:, [5, 70]] = w[:, [70, 5]].clone()


def exchange_two_weights(model):
    w = model.hf_model.model.layers[0].mlp.up_proj.weight.data
    w[2, 9], w[100, 33] = w[100, 33].item(), w[2, 9].item()


def permute_heads(model):
    """Heads 0 and 1 (same KV group) exchanged in W_Q and W_O: the model computes the same function."""
    attn, d = model.hf_model.model.layers[1].self_attn, model.facts.d_head
    q, o = attn.q_proj.weight.data, attn.o_proj.weight.data
    q[: 2 * d] = torch.cat([q[d: 2 * d], q[:d]])
    o[:, : 2 * d] = torch.cat([o[:, d: 2 * d], o[:, :d]], dim=1)


EDITS = [swap_rows, swap_columns, exchange_two_weights, permute_heads]
WHOLE = [swap_rows, swap_columns, permute_heads]  # edits of whole rows, columns or heads


def _values(model) -> list[torch.Tensor]:
    """Every parameter's values, sorted: equal lists mean equal sums and norms."""
    return [p.detach().reshape(-1).sort().values for p in model.hf_model.parameters()]


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
def test_edits_that_keep_sums_and_norms_change_the_fingerprint(edit):
    model = wb.load_model("tiny-llama")
    before, values = model.fingerprint(verify=True), _values(model)
    edit(model)  # through .data: no version counter moves, only the contents can tell
    assert all(torch.equal(a, b) for a, b in zip(values, _values(model)))  # same multiset of values everywhere
    assert model.fingerprint(verify=True) != before
    edit(model)  # each edit undoes itself
    assert model.fingerprint(verify=True) == before


def test_a_cached_result_is_recomputed_after_such_an_edit(tmp_path):
    model, cache = wb.load_model("tiny-llama"), wb.ResultCache(tmp_path)
    first = wb.head_composition(model, null_samples=4, cache=cache)
    assert wb.head_composition(model, null_samples=4, cache=cache) is first and cache.stats["misses"] == 1
    permute_heads(model)
    after = wb.head_composition(model, null_samples=4, cache=cache)
    assert cache.stats["misses"] == 2 and after.fingerprint != first.fingerprint
    assert not torch.equal(after.tensors["head/Q"], first.tensors["head/Q"])  # computed for the permuted heads


@pytest.mark.parametrize("edit", WHOLE, ids=lambda e: e.__name__)
def test_big_models_see_whole_rows_columns_and_heads_through_the_sample(edit, monkeypatch):
    """Beyond EXACT_CHECK_PARAMS a cached call hashes a strided sample; a prime stride above the row length meets
    every row and nearly every column (4099 on real widths; 67 on tiny-llama's width of 64)."""
    monkeypatch.setattr(hooked, "EXACT_CHECK_PARAMS", 0)
    monkeypatch.setattr(fp, "SAMPLE_STRIDE", 67)
    model = wb.load_model("tiny-llama")
    before = model.fingerprint(verify=True)
    edit(model)
    assert model.fingerprint(verify=True) != before


def test_what_the_sample_of_a_big_model_misses_and_what_it_does_not(monkeypatch):
    monkeypatch.setattr(hooked, "EXACT_CHECK_PARAMS", 0)
    model = wb.load_model("tiny-llama")
    before = model.fingerprint(verify=True)
    exchange_two_weights(model)  # two single values through .data, neither at a sampled position: not seen
    assert model.fingerprint(verify=True) == before
    w = model.hf_model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w[2, 9] = w[2, 9] + 0.0  # any write through the parameter moves its version counter: a full rescan
    assert model.fingerprint(verify=True) != before


def test_the_bytes_not_the_layout_or_the_chunking_make_the_hash(monkeypatch):
    torch.manual_seed(0)
    w = torch.randn(96, 40)
    key = fp.scan_parameters({"a": 1}, [("w", w)])[0]
    assert fp.scan_parameters({"a": 1}, [("w", w.t().contiguous().t())])[0] == key  # column-major storage
    monkeypatch.setattr(fp, "CHUNK_BYTES", 100)  # many small pieces, some made contiguous on their own
    assert fp.scan_parameters({"a": 1}, [("w", w)])[0] == key
    assert fp.scan_parameters({"a": 1}, [("w", w.t().contiguous().t())])[0] == key
    assert fp.scan_parameters({"a": 2}, [("w", w)])[0] != key  # the config counts
    assert fp.scan_parameters({"a": 1}, [("v", w)])[0] != key  # and the names
    half = w.bfloat16()
    assert fp.scan_parameters({}, [("w", half)])[0] != fp.scan_parameters({}, [("w", w)])[0]
    bad = half.clone()
    bad[3, 4] = float("nan")
    huge = torch.full((4,), 3e38)  # finite, but the sum overflows: must not be reported
    f16 = torch.full((100,), 60000.0, dtype=torch.float16)  # the same in float16's small range
    f16_bad = f16.clone()
    f16_bad[7] = float("-inf")
    named = [("w", half), ("bad", bad), ("huge", huge), ("f16", f16), ("f16_bad", f16_bad), ("ids", torch.arange(5))]
    assert fp.scan_parameters({}, named)[1] == ["bad", "f16_bad"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_same_on_a_gpu():
    torch.manual_seed(0)
    params = [("a", torch.randn(300, 70)), ("b", torch.randn(70).bfloat16()), ("c", torch.randn(5, 6).t())]
    on_gpu = [(name, p.cuda()) for name, p in params]
    assert fp.scan_parameters({}, on_gpu) == fp.scan_parameters({}, params)


def test_the_gguf_key_hashes_the_whole_file_once(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(bytes(data))
    first = gguf.content_key(path, tmp_path)
    data[len(data) // 2] ^= 1  # a byte in the middle, beyond the first and last MiB
    stamp = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same path, size and time: the kept key is used
    monkeypatch.setattr(gguf, "_KEYS", {})  # a new process: from the key file on disk, without reading the file
    assert gguf.content_key(path, tmp_path) == first
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # touched: hashed again
    assert gguf.content_key(path, tmp_path) != first
