"""Bilinear training (digits, toy, LM), cached weights, truncation, figures, widget, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.analyses.bilinear.training import digits_split, planted_forms, ToyConfig
from workbench.cli import main


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    store = wb.ResultCache(tmp_path_factory.mktemp("bilinear-cache"))
    trained = wb.train_digits(cache=store)
    return store, trained, wb.bilinear_spectrum(trained, cache=store)


def test_digits_classifier_is_accurate(digits):
    _, trained, spectrum = digits
    assert trained.meta["metrics"]["test_accuracy"] > 0.95
    model = trained.model()
    _, _, X, y = digits_split()
    with torch.no_grad():
        assert (model(X).argmax(-1) == y).float().mean().item() == pytest.approx(trained.meta["metrics"]["test_accuracy"])
        # the per-class quadratic forms are the logits exactly
        assert torch.allclose(spectrum.tensors["outputs"], model(X[: len(spectrum.tensors["outputs"])]), atol=1e-4)


def test_truncation_keeps_most_accuracy(digits):
    _, _, spectrum = digits
    trunc = spectrum.to_frame("truncation")
    acc = dict(zip(trunc[trunc.direction == "all"].k, trunc[trunc.direction == "all"].value))
    full = acc[max(acc)]
    assert full > 0.95
    assert acc[0] == pytest.approx(0.1, abs=0.02)  # no eigenvectors: every logit is 0
    assert acc[10] >= full - 0.02  # ten eigenvectors per class keep nearly all of it
    assert acc[5] >= 0.85 and acc[1] < acc[5]
    assert (spectrum.to_frame("directions").k_for_90pct <= 10).all()


def test_cached_weights_are_reused(digits):
    store, trained, _ = digits
    again = wb.train_digits(cache=store)
    assert again is trained  # memory hit
    fresh = wb.ResultCache(store.root.parent)  # a new process would read the file
    loaded = wb.train_digits(cache=fresh)
    assert fresh.stats["disk_hits"] == 1 and fresh.stats["misses"] == 0
    assert loaded.model().fingerprint() == trained.model().fingerprint()
    assert wb.train_digits(cache=fresh, epochs=20) is not loaded  # another config trains anew


def test_weight_decay_lowers_effective_rank():
    loose = wb.bilinear_spectrum(wb.train_digits(weight_decay=0.0, epochs=60, cache=False), cache=False)
    tight = wb.bilinear_spectrum(wb.train_digits(weight_decay=2.0, epochs=60, cache=False), cache=False)
    assert tight.to_frame("directions").effective_rank.median() < 0.7 * loose.to_frame("directions").effective_rank.median()


def test_toy_task_recovers_planted_eigenpairs():
    trained = wb.train_toy(cache=False)
    assert trained.meta["metrics"]["relative_mse"] < 1e-3
    config = ToyConfig()
    values, vectors = planted_forms(config)
    spectrum = wb.bilinear_spectrum(trained, n_top=2, cache=False)
    assert torch.allclose(trained.tensors["planted_vectors"], vectors)
    for k in range(config.n_outputs):
        found_vals = spectrum.tensors["eigenvalues"][k].double()
        order = spectrum.tensors["eigenvalues"][k]
        for value in values[k]:  # the vectors: checked below, through the top eigenvectors
            i = (found_vals - value).abs().argmin()
            assert found_vals[i].item() == pytest.approx(value.item(), abs=0.05)
        top = spectrum.tensors["top_vectors"][k].double()  # [+1, +2, -1, -2]: planted 3, 1 positive; -2 negative
        assert (top[0] @ vectors[k, 0]).abs() > 0.999 and (top[2] @ vectors[k, 1]).abs() > 0.999
        assert order[2:-2].abs().max() < 0.05  # the rest of the spectrum is ~0


def test_bilinear_language_model():
    trained = wb.train_bilinear_lm(steps=150, cache=False)
    m = trained.meta["metrics"]
    assert m["val_loss"] < m["unigram_val_loss"] - 0.3  # it learned more than character frequencies
    lm = trained.model()
    spectrum = wb.bilinear_spectrum(lm, layer=1, tokens=("e", " "), cache=False)
    assert spectrum.direction_names == ["logit 'e'", "logit ' '"]
    assert spectrum.meta["layer"] == 1 and spectrum.meta["rank"] == lm.arch["d_model"]
    assert spectrum.to_frame("eigenvectors")["reads"].str.contains("/").all()
    svd = wb.bilinear_spectrum(lm, layer=-1, cache=False)
    assert svd.meta["direction_kind"] == "svd" and len(svd.direction_names) == 8
    with pytest.raises(wb.InputError, match="out of range"):
        wb.bilinear_spectrum(lm, layer=5, cache=False)
    with pytest.raises(wb.InputError, match="not in the vocabulary"):
        wb.bilinear_spectrum(lm, tokens=("€",), cache=False)


def test_figures_widget_and_report(digits):
    _, trained, spectrum = digits
    figures = spectrum.figures()
    assert set(figures) == {"spectrum", "class eigenvectors", "truncation", "effective rank", "contributions"}
    _assert_tiles_are_the_eigenvectors(figures["class eigenvectors"], spectrum)
    assert len(figures["spectrum"].data) == 10
    widget = spectrum.widget()
    widget.direction.value = 7
    widget.input.value = 3
    label = spectrum.to_frame("inputs").label[3]
    assert "7" in widget.contrib_plot.layout.title.text and label in widget.contrib_plot.layout.title.text
    assert len(widget.vector_plot.layout.annotations) == 12 and widget.image_plot is not None
    html = wb.build_report([spectrum, trained])
    assert "accuracy with k eigenvectors per class" in html and "Training: bilinear-digits-h64" in html


def _assert_tiles_are_the_eigenvectors(fig, spectrum):
    """The class-eigenvector grid is one heat map of tiles: tile (row, class) is that class's top positive (row 0) or
    negative (row 1) eigenvector as an image, peak made positive, on its own scale; the hover reads its own values.
    A grid with two tiles swapped, a tile on the wrong row or a tile not flipped upright fails this."""
    (heat,) = fig.data
    h, w = spectrum.image_shape
    z, raw = np.asarray(heat.z, dtype=float)[::-1], np.asarray(heat.customdata, dtype=float)[::-1]  # image rows down
    vecs, n_top = spectrum.top_vectors.numpy(), spectrum.n_top
    tiles = []
    for row, idx in enumerate((0, n_top)):
        for j in range(len(spectrum.direction_names)):
            y0, x0 = row * (h + 2) + 2, j * (w + 1)
            v = vecs[j, idx][: h * w] * np.sign(vecs[j, idx][np.abs(vecs[j, idx]).argmax()])
            image = v.reshape(h, w)
            np.testing.assert_allclose(raw[y0:y0 + h, x0:x0 + w], image, rtol=1e-6)
            np.testing.assert_allclose(z[y0:y0 + h, x0:x0 + w], image / np.abs(image).max(), rtol=1e-6)
            tiles.append(image)
    assert np.isnan(z).sum() == z.size - len(tiles) * h * w  # the rest is blank
    assert not np.allclose(tiles[0], tiles[1])  # so a swap would be seen
    assert len(fig.layout.annotations) == len(tiles)


def test_cli_digits_demo(capsys):
    assert main(["bilinear", "--epochs", "40", "--ks", "1", "10"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "effective_rank" in out and "accuracy with k eigenvectors" in out
