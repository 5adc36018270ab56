"""Bilinear replacement of an MLP (gated: from its weights; plain: fitted from activations): fit, fidelity,
splicing, restoration, a planted bilinear map recovered; real tier on the embedded model."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from support.families import save_family
from workbench.analyses.bilinear.interaction import interaction_matrices
from workbench.analyses.bilinear.replacement import PLAIN_INIT, ReplacementConfig, fit_from_activations
from workbench.models import hook_names as hn


def _check_replacement(model, result, min_ev):
    a = result.meta["approximation"]
    assert a["explained_variance"] > min_ev
    assert a["explained_variance"] >= a["init_ev"] - 1e-3  # the ridge refit never does worse than the init
    fidelity = result.to_frame("fidelity")
    assert fidelity.measure.iloc[0].startswith("explained variance") and len(fidelity) == 7
    # the stored replacement reproduces the MLP output it was fitted to
    layer = result.meta["layer"]
    tokens = model.to_tokens("The cat sat on the mat because it was warm and soft.")
    _, cache = model.run_with_cache(tokens, names=[hn.mlp_in(layer), hn.mlp_out(layer)])
    x, y = cache[hn.mlp_in(layer)][0, 1:], cache[hn.mlp_out(layer)][0, 1:]
    with torch.no_grad():
        y_hat = result.replacement()(x.float())
    ev = 1 - (y - y_hat).square().sum() / (y - y.mean(0)).square().sum()
    assert ev > min_ev - 0.25
    # the approximation is shown next to every result
    note = result.approximation_note()
    assert "explains" in note and f"layer {layer}" in note
    assert result.summary()[0] == ("approximation", note)
    for fig in result.figures().values():
        assert "bilinear replacement of layer" in fig.layout.title.text
    assert "replacement_ev" in result.to_frame("directions")


def test_replacement_on_tiny_llama_restores_the_model(tiny_llama, tmp_path):
    before = tiny_llama("Hello there, general Kenobi.")
    fp = tiny_llama.fingerprint()
    result = wb.bilinear_replacement(tiny_llama, layer=1, n_directions=4, cache=False)
    assert tiny_llama.fingerprint() == fp and torch.equal(tiny_llama("Hello there, general Kenobi."), before)  # no hooks left
    assert result.meta["kind"] == "bilinear replacement" and result.meta["direction_kind"] == "pca"
    assert result.tensors["W"].shape == (tiny_llama.facts.d_mlp, tiny_llama.facts.d_model)
    assert len(result.direction_names) == 4
    _check_replacement(tiny_llama, result, min_ev=0.9)
    loaded = wb.Result.load(result.save(tmp_path / "replacement.safetensors"))
    assert loaded.approximation_note() == result.approximation_note()
    assert torch.equal(loaded.replacement().P.weight, result.replacement().P.weight)
    # eigenvectors of the replacement are eigenvectors of its interaction matrices
    rep = result.replacement().weights()
    u = result.tensors["directions"][:1].double()
    q = wb.analyses.bilinear.interaction.interaction_matrices(rep.W.double(), rep.V.double(), u @ rep.P.double())[0]
    v, lam = result.tensors["top_vectors"][0, 0].double(), result.tensors["top_values"][0, 0].double()
    assert torch.allclose(q @ v, lam * v, atol=1e-4 * lam.abs().item())


def test_replacement_directions_and_errors(tiny_llama):
    tokens = wb.bilinear_replacement(tiny_llama, layer=0, tokens=("a", "b"), n_top=2, cache=False)
    assert tokens.direction_names == ["logit 'a'", "logit 'b'"]
    vec = torch.zeros(tiny_llama.facts.d_model)
    vec[3] = 1.0
    vectors = wb.bilinear_replacement(tiny_llama, layer=0, directions=vec, n_top=2, cache=False)
    assert torch.equal(vectors.tensors["directions"][0], vec)
    closed = wb.bilinear_replacement(tiny_llama, layer=0, n_top=2, cache=False).meta["approximation"]
    refined = wb.bilinear_replacement(tiny_llama, layer=0, n_top=2, fit_steps=30, cache=False).meta["approximation"]
    assert refined["explained_variance"] > closed["explained_variance"] - 0.01  # Adam steps start from the closed form
    with pytest.raises(wb.InputError, match="out of range"):
        wb.bilinear_replacement(tiny_llama, layer=7, cache=False)
    with pytest.raises(wb.InputError, match="holdout"):
        wb.bilinear_replacement(tiny_llama, layer=0, holdout=1.5, cache=False)
    with pytest.raises(wb.InputError, match="plain MLPs only"):
        wb.bilinear_replacement(tiny_llama, layer=0, d_hidden=32, cache=False)


def test_plain_mlp_replacement_is_fitted_from_activations(tiny_gpt2):
    fp, before = tiny_gpt2.fingerprint(), tiny_gpt2("Hello there, general Kenobi.")
    result = wb.bilinear_replacement(tiny_gpt2, layer=1, n_directions=4, cache=False)
    assert tiny_gpt2.fingerprint() == fp and torch.equal(tiny_gpt2("Hello there, general Kenobi."), before)
    assert result.meta["init"] == result.init == PLAIN_INIT
    assert result.tensors["W"].shape == (tiny_gpt2.facts.d_mlp, tiny_gpt2.facts.d_model)
    _check_replacement(tiny_gpt2, result, min_ev=0.85)
    assert "untrained start" in result.to_frame("fidelity").measure.iloc[2]
    # training is what fits it: the same seeded start with no Adam steps explains far less
    a = result.meta["approximation"]
    untrained = wb.bilinear_replacement(tiny_gpt2, layer=1, fit_steps=0, n_top=2, cache=False).meta["approximation"]
    assert untrained["explained_variance"] == pytest.approx(a["init_ev"])
    assert a["explained_variance"] > untrained["explained_variance"] + 0.1
    narrow = wb.bilinear_replacement(tiny_gpt2, layer=1, d_hidden=16, fit_steps=0, n_top=2, cache=False)
    assert narrow.tensors["W"].shape == (16, tiny_gpt2.facts.d_model)


def test_fit_from_activations_recovers_a_planted_bilinear_map():
    g = torch.Generator().manual_seed(1)
    W, V, P = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(12, 8, generator=g)
    layer = lambda x, W, V, P: ((x @ W.mT) * (x @ V.mT)) @ P.mT
    x = 5.0 * torch.randn(3000, 16, generator=g)  # scales far from 1: the fit must not depend on them
    y = 1e-3 * layer(x, W, V, P)
    fitted, start, _ = fit_from_activations(x[:2400], y[:2400], 16, ReplacementConfig())  # twice the planted width
    held_out_ev = lambda WVP: 1 - (y[2400:] - layer(x[2400:], *WVP)).square().sum() / (y[2400:] - y[2400:].mean(0)).square().sum()
    assert held_out_ev(fitted) > 0.99 and held_out_ev(start) < 0.5
    W2, V2, P2 = fitted
    # the fitted layer's interaction matrices are the planted ones (a quadratic form is unique)
    u = torch.eye(12)[:3]
    q_planted, q_fitted = interaction_matrices(W, V, 1e-3 * u @ P), interaction_matrices(W2, V2, u @ P2)
    assert (q_fitted - q_planted).norm() < 0.1 * q_planted.norm()


# OPT: ReLU MLPs; BLOOM: its MLP module adds the residual inside (mlp.hook_out), so the fit must read hook_mlp_out
@pytest.mark.parametrize("family", ["opt", "bloom"])
def test_plain_mlp_replacement_on_more_families(family, tmp_path):
    model = wb.load_model(save_family(family, tmp_path / family))
    result = wb.bilinear_replacement(model, layer=1, n_directions=2, n_top=2, cache=False)
    a = result.meta["approximation"]
    assert result.meta["init"] == PLAIN_INIT
    assert a["explained_variance"] > 0.9 and a["explained_variance"] >= a["init_ev"] - 1e-4  # training never hurts
    assert abs(a["loss_replaced"] - a["loss_original"]) < 0.01
    _check_replacement(model, result, min_ev=0.9)


@pytest.mark.real
def test_replacement_on_the_embedded_model(embedded):
    fp = embedded.fingerprint()
    result = wb.bilinear_replacement(embedded, cache=False)  # the report's default: layer 6
    assert embedded.fingerprint() == fp
    a = result.meta["approximation"]
    assert a["loss_original"] < a["loss_replaced"] < a["loss_mean_ablated"]
    assert a["loss_recovered"] > 0.4
    assert a["explained_variance"] > a["linear_ev"] + 0.2  # the bilinear form captures what a linear map cannot
    _check_replacement(embedded, result, min_ev=0.6)
    assert result.meta["d_in"] == 576 and result.meta["rank"] == 576
    reads = result.to_frame("eigenvectors")["reads"]
    assert reads.str.startswith("+ ").all()
    html = wb.build_report([result])
    assert "explains" in html and "Next-token loss on held-out text" in html
