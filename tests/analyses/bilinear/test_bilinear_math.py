"""Bilinear interaction matrices: planted spectra, symmetrization, factored vs dense, and refusals."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.analyses.bilinear import BilinearMLP
from workbench.linalg import effective_rank
from workbench.analyses.bilinear import interaction as ix
from workbench.errors import InputError, UnsupportedModelError

D64 = torch.float64


def _orthonormal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=D64))
    return q.mT  # rows orthonormal


def _planted(d=12, extra=3, seed=0):
    """W, V, P whose output 0 is x^T (sum_i lam_i e_i e_i^T) x, with output 1 read from unrelated random units."""
    lam = torch.tensor([5.0, 3.0, 1.5, -2.0, -4.0], dtype=D64)
    e = _orthonormal(d, seed)[: len(lam)]  # [5, d]
    g = torch.Generator().manual_seed(seed + 1)
    W = torch.cat([lam.abs().sqrt()[:, None] * e, torch.randn(extra, d, generator=g, dtype=D64)])
    V = torch.cat([(lam.sign() * lam.abs().sqrt())[:, None] * e, torch.randn(extra, d, generator=g, dtype=D64)])
    P = torch.zeros(2, len(lam) + extra, dtype=D64)
    P[0, : len(lam)] = 1.0
    P[1, len(lam):] = torch.randn(extra, generator=g, dtype=D64)
    return lam, e, W, V, P


def _match(found_vals, found_vecs, lam, e, tol):
    """Every planted (lam_i, e_i) appears among the found eigenpairs (eigenvectors up to sign)."""
    for value, vec in zip(lam, e):
        i = (found_vals - value).abs().argmin()
        assert found_vals[i].item() == pytest.approx(value.item(), abs=tol)
        assert (found_vecs[i] @ vec).abs().item() == pytest.approx(1.0, abs=tol)


@pytest.mark.parametrize("method", ["dense", "factored"])
def test_planted_spectrum_recovered(method):
    lam, e, W, V, P = _planted()
    c = ix.output_coefficients(P, torch.tensor([[1.0, 0.0]], dtype=D64))
    vals, vecs = ix.eigendecompose(W, V, c, method=method)
    _match(vals[0], vecs[0], lam, e, 1e-5)
    rest = vals[0][(vals[0][:, None] - lam[None]).abs().min(1).values > 1e-5]
    assert rest.abs().max() < 1e-5  # everything else is exactly zero
    assert torch.all(vals[0][:-1] >= vals[0][1:])  # descending


@pytest.mark.parametrize("method", ["dense", "factored"])
def test_asymmetric_pair_needs_symmetrizing(method):
    # one unit w = a, v = b: Q = a b^T is not symmetric; sym(Q) has eigenpairs ((a.b ± |a||b|)/2, a/|a| ± b/|b|)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(9, generator=g, dtype=D64), torch.randn(9, generator=g, dtype=D64)
    q_raw = ix.interaction_matrices(a[None], b[None], torch.ones(1, 1, dtype=D64), symmetrize=False)[0]
    assert not torch.allclose(q_raw, q_raw.mT)
    vals, vecs = ix.eigendecompose(a[None], b[None], torch.ones(1, 1, dtype=D64), method=method)
    na, nb = a / a.norm(), b / b.norm()
    lam = torch.stack([(a @ b + a.norm() * b.norm()) / 2, (a @ b - a.norm() * b.norm()) / 2])
    e = torch.stack([(na + nb) / (na + nb).norm(), (na - nb) / (na - nb).norm()])
    _match(vals[0], vecs[0], lam, e, 1e-10)


def test_quadratic_form_equals_layer_output_with_bias():
    torch.manual_seed(0)
    layer = BilinearMLP(7, 5, 3, bias=True).double()
    w = layer.weights()
    assert w.biased and w.d_in == 8
    x = torch.randn(11, 7, dtype=D64)
    xh = torch.cat([x, torch.ones(11, 1, dtype=D64)], 1)
    u = torch.randn(4, 3, dtype=D64)
    c = ix.output_coefficients(w.P, u)
    q = ix.interaction_matrices(w.W, w.V, c)  # [4, 8, 8]
    raw = ix.interaction_matrices(w.W, w.V, c, symmetrize=False)
    assert torch.allclose(q, q.mT)
    expected = layer(x) @ u.mT  # [11, 4]
    for mat in (q, raw):  # the antisymmetric part never contributes to the output
        assert torch.allclose(torch.einsum("nd,kde,ne->nk", xh, mat, xh), expected, atol=1e-10)
    vals, vecs = ix.eigendecompose(w.W, w.V, c)
    contrib = ix.contributions(vals, vecs, xh)  # [11, 4, r]
    assert torch.allclose(contrib.sum(-1), expected, atol=1e-10)
    trunc = ix.truncated_outputs(vals, vecs, xh, (0, 1, vals.shape[1]))
    assert torch.all(trunc[..., 0] == 0) and torch.allclose(trunc[..., -1], expected, atol=1e-10)
    top = vals.abs().argmax(-1)  # k = 1 keeps exactly the largest-|lambda| term
    assert torch.allclose(trunc[..., 1], contrib.gather(2, top[None, :, None].expand(11, 4, 1))[..., 0])


def test_factored_matches_dense_on_random_layers():
    g = torch.Generator().manual_seed(5)
    h, d, k = 6, 40, 7
    W, V = torch.randn(h, d, generator=g, dtype=D64), torch.randn(h, d, generator=g, dtype=D64)
    c = torch.randn(k, h, generator=g, dtype=D64)
    assert ix.choose_method(d, h) == "factored" and ix.choose_method(8, h) == "dense"
    dv, dvec = ix.eigendecompose(W, V, c, method="dense")
    fv, fvec = ix.eigendecompose(W, V, c, method="factored")
    assert dv.shape == (k, d) and fv.shape == (k, 2 * h)
    dense_q = torch.einsum("kr,krd,kre->kde", dv, dvec, dvec)
    fact_q = torch.einsum("kr,krd,kre->kde", fv, fvec, fvec)
    assert torch.allclose(dense_q, fact_q, atol=1e-10)
    assert torch.allclose(dense_q, ix.interaction_matrices(W, V, c), atol=1e-10)
    nonzero = torch.cat([dv[:, :h], dv[:, -h:]], 1)  # rank <= 2h: h positive and h negative at most
    assert torch.allclose(nonzero, torch.cat([fv[:, :h], fv[:, -h:]], 1), atol=1e-10)
    eye = torch.eye(2 * h, dtype=D64)
    assert torch.allclose(fvec @ fvec.mT, eye.expand(k, -1, -1), atol=1e-10)  # orthonormal eigenvectors
    # chunking does not change anything
    cv, _ = ix.eigendecompose(W, V, c, method="factored", chunk=2)
    assert torch.allclose(cv, fv, atol=1e-12)


def test_effective_rank_extremes():
    assert effective_rank(torch.tensor([3.0, 0, 0, 0])).item() == pytest.approx(1.0)
    assert effective_rank(torch.tensor([1.0, -1.0, 1.0, -1.0])).item() == pytest.approx(4.0)


def _planted_layer() -> BilinearMLP:
    lam, e, W, V, P = _planted(d=10, extra=2, seed=4)
    return BilinearMLP.from_weights(W, V, P, name="planted")


def test_spectrum_analysis_on_planted_layer(tmp_path):
    layer = _planted_layer()
    lam, e, *_ = _planted(d=10, extra=2, seed=4)
    store = wb.ResultCache(tmp_path)
    result = wb.bilinear_spectrum(layer, directions=torch.tensor([[1.0, 0.0]]), n_top=2, cache=store)
    row = result.to_frame("directions").iloc[0]
    assert row["lambda_max"] == pytest.approx(5.0, abs=1e-5) and row["lambda_min"] == pytest.approx(-4.0, abs=1e-5)
    vals = result.tensors["top_values"][0].double()  # [+1, +2, -1, -2]
    assert torch.allclose(vals, torch.tensor([5.0, 3.0, -4.0, -2.0], dtype=D64), atol=1e-5)
    vecs = result.tensors["top_vectors"][0].double()
    for i, j in enumerate([0, 1, 4, 3]):
        assert (vecs[i] @ e[j]).abs().item() == pytest.approx(1.0, abs=1e-5)
    # contributions add up to the layer's own output along the direction
    x = result.tensors["inputs"]
    assert torch.allclose(result.tensors["contributions"][:, 0].sum(-1), layer(x.to(D64))[:, 0].detach().to(x.dtype), atol=1e-4)
    loaded = wb.Result.load(result.save(tmp_path / "spectrum.safetensors"))
    assert type(loaded) is type(result) and loaded.config == result.config
    assert torch.equal(loaded.tensors["top_vectors"], result.tensors["top_vectors"])
    assert loaded.to_frame("eigenvectors").equals(result.to_frame("eigenvectors")) and set(loaded.figures()) == set(result.figures())
    again = wb.bilinear_spectrum(layer, directions=[[1.0, 0.0]], n_top=2, cache=store)
    assert store.stats["memory_hits"] == 1 and again is result
    with torch.no_grad():
        layer.W.weight[0, 0] += 1.0  # an edit changes the fingerprint, so the cache recomputes
    assert wb.bilinear_spectrum(layer, directions=[[1.0, 0.0]], n_top=2, cache=store) is not result


def test_direction_kinds_and_input_errors():
    layer = _planted_layer()
    outputs = wb.bilinear_spectrum(layer, cache=False)  # 2 outputs: each is a direction
    assert outputs.direction_names == ["out 0", "out 1"]
    svd = wb.bilinear_spectrum(layer, directions="svd", n_directions=1, cache=False)
    assert len(svd.direction_names) == 1
    with pytest.raises(InputError, match="2 entries"):
        wb.bilinear_spectrum(layer, directions=[[1.0, 0.0, 0.0]], cache=False)
    with pytest.raises(InputError, match="language model"):
        wb.bilinear_spectrum(layer, directions="tokens", tokens=("a",), cache=False)
    with pytest.raises(InputError, match="method"):
        wb.bilinear_spectrum(layer, method="fast", cache=False)


def test_non_bilinear_models_are_refused(tiny_llama, tiny_gpt2):
    with pytest.raises(UnsupportedModelError, match="gated.*not bilinear.*bilinear_replacement"):
        wb.bilinear_spectrum(tiny_llama, cache=False)
    with pytest.raises(UnsupportedModelError, match="plain.*not bilinear"):
        wb.bilinear_spectrum(tiny_gpt2, cache=False)
    with pytest.raises(UnsupportedModelError, match="needs a bilinear model"):
        wb.bilinear_spectrum(torch.nn.Linear(3, 3))
