"""Talking heads, fast tier: Laundry List generator / accuracy / interventions, figures, widget, CLI."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.analyses.heads.laundry import generate_prompts, list_accuracy, rescaled_ov, single_token_items
from workbench.cli import main

LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
TEMPLATE = ("List:{items}.\nSeen:{repeat}.\nLeft:",)


def test_single_token_items_filter(tiny_llama):
    vocab = single_token_items(tiny_llama.tokenizer, ("a", "bb", "c", "a"), prefix="")
    assert vocab == [("a", ord("a")), ("c", ord("c"))]  # byte tokenizer: one byte = one token; duplicates once
    assert single_token_items(tiny_llama.tokenizer, ("a", "c"), prefix=" ") == []  # " a" is two bytes


def test_generator_is_seeded_and_well_formed(tiny_llama):
    vocab = single_token_items(tiny_llama.tokenizer, LETTERS, prefix="")
    prompts = generate_prompts(vocab, 5, 20, seed=3, templates=TEMPLATE)
    assert prompts == generate_prompts(vocab, 5, 20, seed=3, templates=TEMPLATE)
    assert prompts != generate_prompts(vocab, 5, 20, seed=4, templates=TEMPLATE)
    for p in prompts:
        assert len(set(p.items)) == 5 and len(p.item_ids) == 5
        listed, seen = p.text.split("\n")[0], p.text.split("\n")[1]
        assert listed == "List:" + ",".join(p.items) + "."
        assert sorted(seen.removeprefix("Seen:").rstrip(".").split(",")) == sorted(i for j, i in enumerate(p.items) if j != p.target)
        for item, token in zip(p.items, p.item_ids):  # each item is exactly one token of the model
            assert tiny_llama.tokenizer(item, add_special_tokens=False)["input_ids"] == [token]
    assert len({p.target for p in prompts}) > 1
    with pytest.raises(wb.InputError):
        generate_prompts(vocab[:3], 5, 1)
    with pytest.raises(wb.InputError):
        generate_prompts(vocab, 1, 1)


def test_accuracy_matches_a_hand_count():
    logits = torch.full((3, 6), -1.0)
    logits[0, [1, 2, 3, 0]] = torch.tensor([5.0, 1.0, 2.0, 9.0])  # items 1,2,3; target token 1 wins among items, not overall
    logits[1, [2, 4]] = torch.tensor([3.0, 0.0])  # items 2,4; target token 4 loses
    logits[2, [0, 5]] = torch.tensor([7.0, 1.0])  # items 0,5; target token 0 wins everywhere
    items = torch.tensor([[1, 2, 3], [2, 4, 4], [0, 5, 5]])  # padded by repeating (ties never win)
    out = list_accuracy(logits, items, torch.tensor([0, 1, 0]))
    assert out["correct"].tolist() == [True, False, True]
    assert out["top1"].tolist() == [False, False, True]
    assert out["margin"].tolist() == pytest.approx([3.0, -3.0, 6.0])
    assert out["target_prob"][2] == pytest.approx(torch.softmax(logits[2], -1)[0].item())


def test_rescaled_ov_scales_one_component_and_restores_bit_for_bit():
    model = wb.load_model("tiny-llama")
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    fp = model.fingerprint()
    from workbench.analyses.heads.svd import head_weights, ov_svd

    s0 = ov_svd(head_weights(model)).S[1, 2]
    with rescaled_ov(model, [(1, 2, (0, 3), 3.0)]):
        s1 = ov_svd(head_weights(model)).S[1, 2]
        assert model.fingerprint() != fp
    expected = s0.clone()
    expected[[0, 3]] *= 3.0
    assert torch.allclose(s1, expected.sort(descending=True).values, rtol=1e-4)
    with pytest.raises(RuntimeError):
        with rescaled_ov(model, [(0, 1, (2,), 0.0)]):
            raise RuntimeError("interrupted mid-experiment")
    after = model.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and model.fingerprint() == fp


def test_laundry_list_runs_and_restores(tiny_llama):
    fp = tiny_llama.fingerprint()
    result = wb.laundry_list(tiny_llama, cache=False, n_items=(2, 4), n_prompts=3, templates=TEMPLATE,
                             items=LETTERS, item_prefix="", interventions=((0, 1, (0,), 0.0),))
    curve = result.to_frame("curve")
    assert list(curve.condition) == ["baseline", "baseline", "intervention", "intervention"]
    assert curve.prompts.tolist() == [3, 3, 3, 3] and curve.chance.tolist() == [0.5, 0.25, 0.5, 0.25]
    prompts = result.to_frame("prompts")
    assert prompts.correct.groupby([prompts.condition, prompts.n_items]).mean().tolist() == curve.accuracy.tolist()
    assert not prompts[prompts.condition == "baseline"].margin.equals(prompts[prompts.condition == "intervention"].margin)
    assert tiny_llama.fingerprint() == fp
    assert "intervention" in dict(result.summary())
    assert len(result.figure().data) == 3
    with pytest.raises(wb.InputError):  # no multi-letter word is one byte token
        wb.laundry_list(tiny_llama, cache=False, n_items=(2,), item_prefix=" ")


@pytest.fixture(scope="module")
def composition(tiny_llama):
    return wb.head_composition(tiny_llama, cache=False, null_samples=32)


def test_figures(composition):
    figs = composition.figures()
    assert {"layers", "heads", "top_pair", "top_pair_spectra", "effective_rank", "null"} <= set(figs)
    assert len(figs["layers"].data) == 3 and [t.visible for t in figs["layers"].data] == [True, False, False]
    assert len(figs["layers"].layout.updatemenus[0].buttons) == 3
    z = figs["heads"].data[0].z
    assert len(z) == 8 and len(z[0]) == 8  # 2 layers x 4 heads on each side


def test_widget_click_selects_pair_and_runs_laundry(composition, tiny_llama):
    from types import SimpleNamespace

    w = composition.widget(model=tiny_llama, n_items=(2,), n_prompts=2, templates=TEMPLATE, items=LETTERS, item_prefix="")
    w.kind.value = "V"
    w.view.value = "heads"
    w._on_click(None, SimpleNamespace(xs=["L1H3"], ys=["L0H2"]))
    assert w.pair.value == (0, 2, 1, 3)
    expected = composition.breakdown((0, 2), (1, 3), "V")
    assert list(w.breakdown.data[0].y) == pytest.approx(expected.share.round(4).tolist())
    assert [t.name for t in w.spectra.data] == ["L0H2 OV", "L0H2 QK", "L1H3 OV", "L1H3 QK"]
    assert (w.laundry.layer.value, w.laundry.head.value) == (0, 2)
    w.view.value = "layers"
    assert any(v is None for row in w.heatmap.data[0].z for v in row)  # gaps as None: widget messages are JSON
    assert not any(v != v for row in w.heatmap.data[0].z for v in row if v is not None)
    w._on_click(None, SimpleNamespace(xs=[1], ys=[0]))
    pairs = composition.to_frame()
    best = pairs[pairs.kind == "V"].iloc[0]
    assert w.pair.value == (best.writer_layer, best.writer_head, best.reader_layer, best.reader_head)
    w.laundry.scale.value = 0.0
    result = w.laundry.run()
    assert result is not None and {t.name for t in w.laundry.curve.data} == {"baseline", "intervention", "chance (1/N)"}
    assert len(result.widget().children) == 2  # a Laundry List result on its own: summary + curve
    w.laundry.components.value = "99"
    assert w.laundry.run() is None and "no head" in w.laundry.status.value
    w.laundry.components.value = "1, 2"
    w.laundry.add()
    assert w.laundry.edits.value == "L0H2:1,2x0"
    w.laundry.suggest()
    from workbench.widgets.heads import parse_edits

    edits = parse_edits(w.laundry.edits.value)
    assert len(edits) == 5 and all(s == 0.0 for *_, s in edits)
    assert w.laundry.run() is not None
    with pytest.raises(wb.InputError):
        parse_edits("L1H2 component 3")


def test_cli_heads(capsys):
    assert main(["heads", "--model", "tiny-llama", "--top", "3", "--kinds", "Q", "V"]) == 0
    out = capsys.readouterr().out
    assert "top Q-composition pairs" in out and "top V-composition pairs" in out and "K-composition pairs" not in out
    assert main(["heads", "--model", "tiny-llama", "--writer-layers", "1", "--reader-layers", "0"]) == 2


def test_report_section(composition, tmp_path):
    path = wb.report([composition], tmp_path / "r.html")
    text = path.read_text()
    assert "Attention-head composition" in text and "top V-composition" in text and "vs_rotated" in text


def test_laundry_component_scan_matches_finite_differences():
    from workbench.analyses.heads.laundry_scan import items_margin, compute_laundry_scan, LaundryScanConfig

    model = wb.load_model("tiny-llama", seed=3)
    kw = dict(n_items=3, n_prompts=2, seed=5, templates=TEMPLATE, items=LETTERS, item_prefix="")
    result = compute_laundry_scan(model, LaundryScanConfig(**kw))
    scan = result.components
    assert len(scan) == 2 * 4 * 16 and scan.d_margin.is_monotonic_decreasing
    last = scan.iloc[-1]
    assert result.edits(1) == ((int(last["layer"]), int(last["head"]), (int(last["component"]),), 0.0),)
    prompts = generate_prompts(single_token_items(model.tokenizer, LETTERS, ""), 3, 2, seed=5, templates=TEMPLATE)
    ids, mask = model.to_tokens_batch([p.text for p in prompts])
    items = torch.tensor([p.item_ids for p in prompts])
    target = torch.tensor([p.target for p in prompts])

    def margin():
        with torch.no_grad():
            last = model(ids)[torch.arange(len(prompts)), mask.sum(1) - 1]
        return items_margin(last, items, target).double().mean().item()

    base, eps = margin(), 1e-2
    for r in [*scan.head(2).itertuples(), *scan.tail(1).itertuples()]:
        with rescaled_ov(model, [(r.layer, r.head, (r.component,), 1 + eps)]):
            slope = (margin() - base) / eps
        assert slope == pytest.approx(r.d_margin, rel=0.05, abs=1e-4)


def test_laundry_component_scan_is_a_cached_result(tmp_path):
    model = wb.load_model("tiny-llama", seed=3)
    store = wb.ResultCache(tmp_path / "cache")
    kw = dict(n_items=3, n_prompts=1, templates=TEMPLATE, items=LETTERS, item_prefix="")
    scan = wb.laundry_component_scan(model, cache=store, **kw)
    assert wb.laundry_component_scan(model, cache=store, **kw) is scan  # through run_analysis and the cache
    loaded = wb.laundry_component_scan(model, cache=wb.ResultCache(store.root.parent), **kw)
    assert loaded.components.equals(scan.components) and loaded.edits(3) == scan.edits(3)
    assert "laundry_scan" in scan.figures() and "Laundry List: first-order scan" in scan._repr_html_()
