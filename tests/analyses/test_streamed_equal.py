"""The overview and head effects read one layer's weights at a time (bounded memory at any size); their results
are those of the stacked computation they replaced: the reference below is that computation, kept here."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.analyses.heads.effects import HeadEffectsConfig, _attach_scores, _auto_writers, compute_head_effects
from workbench.analyses.heads.scores import all_compositions
from workbench.analyses.heads.svd import head_weights, ov_svd
from workbench.analyses.overview.card import OverviewConfig, _matrices, compute_overview, matrix_stats
from workbench.linalg import singular_values
from workbench.models.loading import from_hf

from support.families import build_family, save_family
from workbench.models.tiny import byte_tokenizer


def stacked_overview(model) -> tuple[dict, pd.DataFrame]:
    """The overview's tensors and matrices table as computed before streaming: every layer's matrices held in
    float32, stacked per matrix, spectra and statistics batched over layers."""
    per_layer: dict[str, dict[int, torch.Tensor]] = {}
    for layer in range(model.facts.n_layers):
        for name, matrix in _matrices(model, layer).items():
            per_layer.setdefault(name, {})[layer] = matrix.float()
    rows, tensors = [], {}
    for name, by_layer in per_layer.items():
        layers, mats = list(by_layer), list(by_layer.values())
        stack = torch.stack(mats)
        sv = singular_values(stack)
        tensors[f"sv/{name}"] = sv
        if len(layers) != model.facts.n_layers:
            tensors[f"layers/{name}"] = torch.tensor(layers)
        stats = matrix_stats(sv, stack)
        for i, layer in enumerate(layers):
            rows.append({"layer": layer, "matrix": name, "rows": stack.shape[1], "cols": stack.shape[2],
                         **{k: float(v[i]) for k, v in stats.items()}})
    tensors["embedding_norms"] = model.W_E.float().norm(dim=-1)
    return tensors, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    tokenizer = byte_tokenizer(tmp_path_factory.mktemp("tok"))
    return {f: from_hf(build_family(f), tokenizer, f) for f in ("llama", "gpt2", "qwen2_moe")}


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2_moe"])
def test_streamed_overview_equals_the_stacked_one(family, family_models):
    model = family_models[family]
    result = compute_overview(model, OverviewConfig())
    tensors, table = stacked_overview(model)
    assert result.tensors.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(result.tensors[key], value), key
    pd.testing.assert_frame_equal(result.tables["matrices"], table, check_exact=True)
    broken = table.assign(max_abs=table.max_abs.where(table.index != 3, table.max_abs * (1 + 1e-9)))
    with pytest.raises(AssertionError):  # the comparison sees a change in the ninth digit of one cell
        pd.testing.assert_frame_equal(result.tables["matrices"], broken, check_exact=True)


def test_streamed_overview_from_shards_equals_the_loaded_model(tmp_path, family_models):
    folder = save_family("qwen3", tmp_path / "qwen3")
    from_shards = wb.model_overview(wb.load_weights(folder), cache=False)
    loaded = wb.model_overview(wb.load_model(folder, progress=False), cache=False)
    for key, value in loaded.tensors.items():
        assert torch.equal(from_shards.tensors[key], value), key
    pd.testing.assert_frame_equal(from_shards.tables["matrices"], loaded.tables["matrices"], check_exact=True)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_streamed_head_effects_score_as_the_stacked_weights_did(family, family_models):
    model = family_models[family]
    config = HeadEffectsConfig(prompts=("The cat sat on the mat. The cat",), n_writers=2)
    result = compute_head_effects(model, config)
    everything = head_weights(model, fold_norm=True)  # the stacked weights the analysis used to hold
    ov = ov_svd(everything)
    comps = all_compositions(everything, everything, show_progress=False, ov=ov)
    assert result.writers == _auto_writers(comps, config.n_writers)  # the same writers picked
    table = result.effects[["writer_layer", "writer_head", "component", "reader_layer", "reader_head", "kind", "effect"]]
    before = _attach_scores(table, comps, ov.S.cpu())
    for column in ("weight_score", "weight_strength"):
        assert torch.allclose(torch.tensor(result.effects[column].to_numpy()), torch.tensor(before[column].to_numpy()),
                              rtol=1e-5, atol=1e-7), column
    wrong = _attach_scores(table, {k: type(c)(c.component, c.head.transpose(0, 2).transpose(1, 3), c.writer_s)
                                   for k, c in comps.items()}, ov.S.cpu())  # writer and reader swapped
    assert not torch.allclose(torch.tensor(wrong.weight_score.to_numpy()), torch.tensor(before.weight_score.to_numpy()),
                              rtol=1e-5, atol=1e-7)
