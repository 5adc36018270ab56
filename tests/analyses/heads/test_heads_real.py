"""Talking heads, real tier: the embedded SmolLM2-135M (30 layers, 9 query / 3 kv heads)."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.analyses.heads.scores import dense_circuits, dense_score, right_matrix
from workbench.analyses.heads.svd import head_weights
from workbench.analyses.heads.laundry import single_token_items

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def composition(embedded):
    return wb.head_composition(embedded, cache=False)


def test_composition_on_the_embedded_model(composition, embedded):
    meta = composition.meta
    assert meta["heads_per_kv"] == 3 and meta["n_heads"] == 9 and meta["norm_folded"]
    pairs = composition.to_frame()
    assert len(pairs) == 3 * 81 * sum(29 - l for l in range(29))  # every writer x later reader x kind
    assert composition.tensors["component/Q"].shape == (30, 9, 64, 30, 9)
    top = pairs.iloc[0]
    assert top.vs_null > 3  # far above random matrices of the same shapes and norms
    w = head_weights(embedded)
    gen = torch.Generator().manual_seed(0)
    for kind in "QKV":  # factored vs dense d_model x d_model products, whole head and per component
        sample = pairs[pairs.kind == kind].sample(4, random_state=int(torch.randint(0, 999, (1,), generator=gen)))
        for r in [*sample.itertuples(), *pairs[pairs.kind == kind].head(1).itertuples()]:
            left = dense_circuits(w, r.writer_layer, r.writer_head)["OV"]
            right = right_matrix(dense_circuits(w, r.reader_layer, r.reader_head), kind)
            assert r.score == pytest.approx(dense_score(left, right).item(), rel=1e-4)
            u, s, vh = torch.linalg.svd(left)
            c = composition.breakdown((r.writer_layer, r.writer_head), (r.reader_layer, r.reader_head), kind)
            for i in (0, 1, 63):
                dense = dense_score(s[i] * torch.outer(u[:, i], vh[i]), right).item()
                assert c.score[i] == pytest.approx(dense, rel=1e-4)


def test_effects_on_the_embedded_model(embedded, composition):
    fp = embedded.fingerprint()
    effects = wb.head_effects(embedded, cache=False, n_writers=2)
    assert embedded.fingerprint() == fp
    table = effects.to_frame()
    assert set(table.kind) == {"Q", "K", "V"} and (table.effect >= 0).all()
    corr = effects.to_frame("correlation").set_index(["kind", "level"])
    assert corr.loc[("V", "head"), "spearman"] > 0  # the weight picture predicts value effects
    assert set(effects.figures()) == {"effects_Q", "effects_K", "effects_V"}


def test_laundry_list_on_the_embedded_model(embedded):
    vocab = single_token_items(embedded.tokenizer)
    assert len(vocab) > 50
    for word, token in vocab:
        assert embedded.tokenizer(word, add_special_tokens=False)["input_ids"] == [token]
    fp = embedded.fingerprint()
    result = wb.laundry_list(embedded, cache=False, n_items=(2, 8), n_prompts=6, interventions=((16, 6, (1,), 0.0),))
    assert embedded.fingerprint() == fp
    curve = result.to_frame("curve").set_index(["condition", "n_items"])
    assert curve.loc[("baseline", 2), "accuracy"] > curve.loc[("baseline", 8), "accuracy"]
    assert curve.loc[("baseline", 2), "accuracy"] > 0.5


def test_component_scan_finds_an_intervention_that_helps(embedded):
    """Zero the 5 components whose scan (on seed-1 prompts) says they hurt the margin most; accuracy
    on other prompts (seed 0) goes up. Random components zeroed do not do that (see the report)."""
    scan = wb.laundry_component_scan(embedded, n_items=4, n_prompts=8, seed=1)
    assert len(scan.components) == 30 * 9 * 64
    worst = scan.edits(5)
    fp = embedded.fingerprint()
    result = wb.laundry_list(embedded, cache=False, n_items=(3,), n_prompts=12, seed=0, interventions=worst)
    assert embedded.fingerprint() == fp
    acc = result.to_frame("curve").set_index("condition").accuracy
    assert acc["intervention"] >= acc["baseline"] + 0.1
