"""Talking heads, fast tier: planted composition in attention-only tiny models, factored maths
against dense products and TransformerLens, GQA expansion, null baseline, measured effects."""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from workbench.analyses.heads.scores import all_compositions, dense_circuits, dense_score, right_matrix
from workbench.analyses.heads.effects import HeadEffectsConfig, compute_head_effects
from workbench.analyses.heads.svd import factored_svd, head_weights, ov_svd, qk_svd, spectrum_stats
from workbench.analyses.heads.laundry import rescaled_ov

D_HEAD = 16


def attention_only(seed: int = 0):
    """A fresh tiny-llama (2 layers, d_model 64, 4 query / 2 kv heads) with every MLP zeroed."""
    model = wb.load_model("tiny-llama", seed=seed)
    with torch.no_grad():
        for layer in range(model.facts.n_layers):
            model.mlp_weights(layer).W_out.zero_()
    return model


def unit(i: int, n: int = 64) -> torch.Tensor:
    e = torch.zeros(n)
    e[i] = 1.0
    return e


@pytest.fixture(scope="module")
def planted():
    """Writer A = L0H0 writes x -> p (rank 1). Readers in layer 1:
    H2 queries read p (Q-composition 1), H3 queries read q _|_ p (0),
    H0 keys read p (K-composition 1) and its values read p (V-composition 1)."""
    model = attention_only()
    a0, a1 = model.attention_weights(0), model.attention_weights(1)
    gen = torch.Generator().manual_seed(1)
    x, y, z, r = (torch.randn(64, generator=gen) for _ in range(4))
    p, q = unit(3), unit(40)
    with torch.no_grad():
        a0.W_V[0].zero_(); a0.W_V[0][:, 0] = x  # kv head 0 (query heads 0, 1)
        a0.W_O[0].zero_(); a0.W_O[0][0] = p
        a1.W_K[1].zero_(); a1.W_K[1][:, 0] = y  # kv head 1 (query heads 2, 3)
        a1.W_Q[2].zero_(); a1.W_Q[2][:, 0] = p
        a1.W_Q[3].zero_(); a1.W_Q[3][:, 0] = q
        a1.W_K[0].zero_(); a1.W_K[0][:, 0] = p  # kv head 0 (query heads 0, 1)
        a1.W_Q[0].zero_(); a1.W_Q[0][:, 0] = z
        a1.W_V[0].zero_(); a1.W_V[0][:, 0] = p
        a1.W_O[0].zero_(); a1.W_O[0][0] = r
        # a non-trivial norm gain: p is a basis vector, so folding keeps the planted scores exact
        model.bridge.blocks[1].ln1.weight.copy_(0.5 + torch.rand(64, generator=gen))
    return model


@pytest.mark.parametrize("fold_norm", [False, True])
def test_planted_composition_near_one_and_orthogonal_near_zero(planted, fold_norm):
    result = wb.head_composition(planted, cache=False, fold_norm=fold_norm, null_samples=64)
    head = {k: result.tensors[f"head/{k}"] for k in "QKV"}
    assert head["Q"][0, 0, 1, 2] == pytest.approx(1.0, abs=1e-5)
    assert head["Q"][0, 0, 1, 3] == pytest.approx(0.0, abs=1e-6)
    assert head["K"][0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5)
    assert head["V"][0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5)
    pairs = result.to_frame()
    # GQA: query heads 0 and 1 of layer 1 share the planted K/V head, so both compose with A
    for kind, readers in (("Q", {2}), ("K", {0, 1}), ("V", {0, 1})):
        top = pairs[pairs.kind == kind].head(len(readers))
        assert set(top.reader_head) == readers and set(top.writer_head) == {0} and set(top.reader_layer) == {1}
        assert (top.score > 1 - 1e-5).all() and (top.vs_null > 3).all()
        assert (top.top_share > 1 - 1e-5).all() and (top.components_90 == 1).all()
        assert (top.best_component_score > 1 - 1e-5).all() and (top.components_above_null == 1).all()
    assert (pairs.writer_layer < pairs.reader_layer).all()  # only later readers pair up
    assert len(pairs) == 3 * 4 * 4  # layer 0 writers x layer 1 readers x kinds


def test_planted_single_component_is_found():
    """OV of L0H1 = W_V diag(s) E with orthonormal W_V columns and E rows e_10.. e_25: component j
    writes exactly e_(10+j). Reader L1H2 queries read only e_15 -> component 5 carries everything."""
    model = attention_only()
    a0, a1 = model.attention_weights(0), model.attention_weights(1)
    gen = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=gen))[0][:, :D_HEAD]
    s = torch.linspace(3.0, 1.0, D_HEAD)
    with torch.no_grad():
        a0.W_V[0].copy_(basis)
        a0.W_O[1].copy_(torch.diag(s) @ torch.stack([unit(10 + j) for j in range(D_HEAD)]))
        a1.W_Q[2].zero_(); a1.W_Q[2][:, 0] = unit(15)
    result = wb.head_composition(model, cache=False, fold_norm=False, kinds=("Q",), null_samples=32)
    ov = ov_svd(head_weights(model, fold_norm=False))
    assert torch.allclose(ov.S[0, 1], s, atol=1e-5)
    assert ov.Vh[0, 1, 5] @ unit(15) == pytest.approx(1.0, abs=1e-5) or ov.Vh[0, 1, 5] @ unit(15) == pytest.approx(-1.0, abs=1e-5)
    breakdown = result.breakdown((0, 1), (1, 2), "Q")
    assert breakdown.share.idxmax() == 5 and breakdown.share[5] == pytest.approx(1.0, abs=1e-5)
    assert breakdown.score[5] == pytest.approx(1.0, abs=1e-5)
    assert result.tensors["head/Q"][0, 1, 1, 2] == pytest.approx(float(s[5] / s.norm()), rel=1e-5)
    pair = result.to_frame().query("writer_head == 1 and reader_head == 2").iloc[0]
    assert pair.top_component == 5 and pair.components_above_null == 1
    assert pair.best_component_score == pytest.approx(1.0, abs=1e-5) and pair.score < 0.3  # whole head hides it


def test_factored_scores_match_dense_products(tiny_llama):
    w = head_weights(tiny_llama)
    comps = all_compositions(w, w, show_progress=False)
    ov = ov_svd(w)
    for kind in "QKV":
        for a in range(4):
            left = dense_circuits(w, 0, a)["OV"]
            u, s, vh = torch.linalg.svd(left)
            for b in range(4):
                right = right_matrix(dense_circuits(w, 1, b), kind)
                assert comps[kind].head[0, a, 1, b].item() == pytest.approx(dense_score(left, right).item(), rel=1e-4)
                for i in range(D_HEAD):  # per component: L = s_i u_i v_i^T
                    dense = dense_score(s[i] * torch.outer(u[:, i], vh[i]), right).item()
                    assert comps[kind].component[0, a, i, 1, b].item() == pytest.approx(dense, rel=1e-4)
            assert torch.allclose(ov.S[0, a].double(), s[:D_HEAD], rtol=1e-5)
        assert torch.allclose(comps[kind].share.sum(2)[0, :, 1], torch.ones(4), atol=1e-5)


def test_whole_head_scores_match_transformer_lens(tiny_llama, tiny_gpt2):
    for model in (tiny_llama, tiny_gpt2):
        w = head_weights(model, fold_norm=False)  # TransformerLens scores the raw (unfolded) weights
        ours = all_compositions(w, w, show_progress=False)
        for kind in "QKV":
            theirs = model.bridge.all_composition_scores(kind).scores
            assert torch.allclose(ours[kind].head[0, :, 1], theirs[0, :, 1].to(ours[kind].head), rtol=1e-4, atol=1e-7)


def test_factored_svd_and_spectra():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 40, 6, generator=gen), torch.randn(5, 6, 30, generator=gen)
    svd = factored_svd(a, b)
    dense = a @ b
    assert torch.allclose(svd.U @ torch.diag_embed(svd.S) @ svd.Vh, dense, atol=1e-4)
    assert torch.allclose(svd.S, torch.linalg.svdvals(dense)[:, :6], rtol=1e-5)
    stats = spectrum_stats(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    assert stats["effective_rank"].tolist() == pytest.approx([1.0, 2.0])
    assert stats["stable_rank"].tolist() == pytest.approx([1.0, 2.0])


def test_gqa_expansion(tiny_llama):
    w = head_weights(tiny_llama, fold_norm=False)
    assert w.heads_per_kv == 2 and w.W_K.shape == w.W_Q.shape == (2, 4, 64, D_HEAD)
    for layer in range(2):
        attn = tiny_llama.attention_weights(layer)
        for h in range(4):
            assert torch.equal(w.W_K[layer, h], attn.W_K[h // 2]) and torch.equal(w.W_V[layer, h], attn.W_V[h // 2])
    # query heads 0 and 1 share K: their QK circuits differ only through W_Q
    qk = qk_svd(w)
    assert not torch.allclose(qk.S[0, 0], qk.S[0, 1])
    # folding multiplies the rows that read the residual by the norm gain
    gain = tiny_llama.bridge.blocks[1].ln1.weight
    folded = head_weights(tiny_llama, fold_norm=True)
    assert torch.allclose(folded.W_Q[1], w.W_Q[1] * gain[None, :, None])


def test_null_baseline_is_near_isotropic_expectation(tiny_llama):
    result = wb.head_composition(tiny_llama, cache=False, null_samples=64)
    null = result.to_frame("null")
    assert set(null.kind) == {"Q", "K", "V"} and set(null.level) == {"head", "component"}
    assert set(null.null) == {"gaussian", "rotated"} and len(null) == 12
    for row in null.itertuples():  # random matrices: E CS^2 ~ 1 / d_model
        assert row.mean == pytest.approx(1 / math.sqrt(64), rel=0.25)
        assert row.q50 <= row.q95 <= row.q99 <= row.max
    assert result.tensors["null/Q"].numel() == result.tensors["null_rotated/Q"].numel() == 64 * 64


def test_rotated_null_keeps_writer_spectra(tiny_llama):
    """Rotating W_O's row space keeps the OV spectrum; the real readers are untouched."""
    from workbench.analyses.heads import scores as C

    w = head_weights(tiny_llama)
    captured = {}
    real = C.all_compositions
    C.all_compositions = lambda writers, readers, *a, **k: captured.update(writers=writers, readers=readers) or real(writers, readers, *a, **k)
    try:
        C.rotated_null_scores(w, ("Q",), 6, seed=0)
    finally:
        C.all_compositions = real
    rotated, readers = captured["writers"], captured["readers"]
    s_rot = ov_svd(rotated).S[0]
    s_all = ov_svd(w).S.flatten(0, 1)
    for s in s_rot:  # each rotated writer has the spectrum of some real head
        assert torch.isclose(s_all, s, rtol=1e-4).all(-1).any()
    assert not any(torch.allclose(rotated.W_O[0, i], w.W_O.flatten(0, 1)[j]) for i in range(6) for j in range(8))
    assert any(torch.equal(readers.W_Q[0, 0], m) for m in w.W_Q.flatten(0, 1))


def test_streamed_nulls_equal_the_stacked_ones(tiny_llama, monkeypatch):
    """The nulls as head_composition computes them (one head at a time, readers met in blocks, the rotated null's
    real heads re-read from their layers) equal the references built from every random head at once."""
    from workbench.analyses.heads import scores as C
    from workbench.analyses.heads.scores_streamed import rotated_null_streamed

    monkeypatch.setattr(C, "REACH_BLOCK", 1)  # a block per reader: the blocking is exercised too
    w = head_weights(tiny_llama)
    for kinds in (("Q", "K", "V"), ("V",)):
        pairs = [(C.null_scores(C.HeadNorms.of(w), kinds, 12, seed=3), C.null_scores_reference(w, kinds, 12, seed=3)),
                 (rotated_null_streamed(tiny_llama, kinds, 12, 4, fold_norm=True), C.rotated_null_scores(w, kinds, 12, seed=4))]
        for streamed, stacked in pairs:
            for kind in kinds:
                for field in ("component", "head", "writer_s"):
                    torch.testing.assert_close(getattr(streamed[kind], field), getattr(stacked[kind], field), rtol=1e-6, atol=1e-7)


def test_restrictions_and_errors(tiny_llama):
    result = wb.head_composition(tiny_llama, cache=False, writer_heads=(1,), reader_heads=(0, 3), kinds=("V",), null_samples=0)
    pairs = result.to_frame()
    assert set(pairs.writer_head) == {1} and set(pairs.reader_head) == {0, 3} and set(pairs.kind) == {"V"}
    assert result.tensors["component/V"].shape == (2, 1, D_HEAD, 2, 2)
    with pytest.raises(wb.InputError):
        wb.head_composition(tiny_llama, cache=False, writer_layers=(1,), reader_layers=(0,))
    with pytest.raises(wb.InputError):
        wb.head_composition(tiny_llama, cache=False, kinds=("X",))
    with pytest.raises(wb.InputError):
        wb.head_composition(tiny_llama, cache=False, writer_heads=(7,))


def test_full_component_frame(tiny_llama):
    result = wb.head_composition(tiny_llama, cache=False, null_samples=0)
    full = result.component_frame()
    assert len(full) == 3 * 4 * D_HEAD * 4 and full.score.is_monotonic_decreasing
    row = full.iloc[5]
    b = result.breakdown((row.writer_layer, row.writer_head), (row.reader_layer, row.reader_head), row.kind)
    assert b.score[row.component] == pytest.approx(row.score) and b.share[row.component] == pytest.approx(row.share)
    assert (result.component_frame("V", min_score=0.2).score >= 0.2).all()
    assert result.component_frame(writer_layers=(1,)).empty


def test_result_round_trip(tiny_llama, tmp_path):
    result = wb.head_composition(tiny_llama, cache=False, null_samples=16)
    loaded = wb.Result.load(result.save(tmp_path / "heads.safetensors"))
    assert loaded.breakdown((0, 2), (1, 1), "K").equals(result.breakdown((0, 2), (1, 1), "K"))
    assert loaded.to_frame().equals(result.to_frame())
    assert loaded.layer_matrix("Q").shape == (2, 2) and math.isnan(loaded.layer_matrix("Q")[1, 0])


# ------------------------------------------------------------------ measured effects
def test_effects_follow_the_planted_channel(planted):
    result = compute_head_effects(planted, HeadEffectsConfig(
        prompts=("hello there, general", "a quick test of heads"), writers=((0, 0, -1), (0, 0, 0))))
    e = result.to_frame()
    get = lambda kind, head, comp: e.query(f"kind == '{kind}' and reader_head == {head} and component == {comp}").effect.item()
    for comp in (-1, 0):  # A is rank 1: whole head and its single component are the same thing
        assert get("Q", 2, comp) > 4 * get("Q", 3, comp)  # H3 reads q _|_ p: only the norm (1/rms) moves it
        assert get("V", 0, comp) > 0.1
    assert get("Q", 2, -1) == pytest.approx(get("Q", 2, 0), rel=1e-3)
    corr = result.to_frame("correlation")
    assert set(corr.kind) == {"Q", "K", "V"} and corr.n.min() == 4
    figs = result.figures()
    assert set(figs) == {"effects_Q", "effects_K", "effects_V"}
    assert sum(len(t.x) for t in figs["effects_Q"].data) == len(e[e.kind == "Q"])
    assert "L0H0" in dict(result.summary())["writers"]


def test_component_ablation_hook_equals_weight_edit(tiny_llama):
    """Projecting out component i in hook_z and rescaling it to 0 in W_O remove the same thing."""
    from workbench.analyses.heads.effects import _ablation_hook, component_directions

    writers = [(0, 2, 3)]
    directions = component_directions(tiny_llama, writers, fold_norm=True)
    hook = _ablation_hook([(slice(0, 1), 0, 2, 3)], tiny_llama, directions, None)
    tokens = tiny_llama.to_tokens("composition of heads")
    with tiny_llama.hooks([(wb.hook_names.attn_z(0), hook)]):
        hooked = tiny_llama(tokens)
    with rescaled_ov(tiny_llama, [(0, 2, (3,), 0.0)]):
        edited = tiny_llama(tokens)
    assert torch.allclose(hooked, edited, atol=1e-5)
    assert not torch.allclose(hooked, tiny_llama(tokens), atol=1e-4)


def test_effects_input_errors(tiny_llama):
    with pytest.raises(wb.InputError):
        compute_head_effects(tiny_llama, HeadEffectsConfig(prompts=()))
    with pytest.raises(wb.InputError):
        compute_head_effects(tiny_llama, HeadEffectsConfig(writers=((1, 0, -1),)))  # nothing after the last layer
    with pytest.raises(wb.InputError):
        compute_head_effects(tiny_llama, HeadEffectsConfig(ablation="resample"))
