"""Model overview: statistics against direct computation, planted spectra, figures, widget, CLI."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import workbench as wb
from workbench.analyses.overview.card import matrix_stats
from workbench.cli import main


@pytest.fixture(scope="module")
def overview(tiny_llama):
    return wb.model_overview(tiny_llama, cache=False)


def test_planted_spectrum_statistics():
    # diag(3, 4, 0) padded: singular values 4, 3, 0; ||W||_F^2 = 25; RMS over 9 entries.
    w = torch.zeros(1, 3, 3)
    w[0, 0, 0], w[0, 1, 1] = 3.0, 4.0
    stats = matrix_stats(torch.linalg.svdvals(w), w)
    p = torch.tensor([4 / 7, 3 / 7])
    assert stats["frobenius"].item() == pytest.approx(5.0)
    assert stats["sigma_max"].item() == pytest.approx(4.0)
    assert stats["stable_rank"].item() == pytest.approx(25 / 16)
    assert stats["effective_rank"].item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)
    assert stats["outlier_ratio"].item() == pytest.approx(4.0 / math.sqrt(25 / 9))


def test_matrix_rows_match_the_weights(overview, tiny_llama):
    table = overview.to_frame("matrices")
    assert len(table) == 2 * 7 and set(table["matrix"]) == {"W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out"}
    down = tiny_llama.hf_model.model.layers[1].mlp.down_proj.weight
    row = table[(table.layer == 1) & (table.matrix == "W_out")].iloc[0]
    assert row["frobenius"] == pytest.approx(torch.linalg.norm(down).item(), rel=1e-6)
    assert row["max_abs"] == pytest.approx(down.abs().max().item(), rel=1e-6)
    assert torch.allclose(overview.spectrum("W_out", 1), torch.linalg.svdvals(down), rtol=1e-5)
    k = tiny_llama.hf_model.model.layers[0].self_attn.k_proj.weight  # grouped-query: 2 kv heads x 16
    assert (row := table[(table.layer == 0) & (table.matrix == "W_K")].iloc[0])["cols"] == 32
    assert row["sigma_max"] == pytest.approx(torch.linalg.matrix_norm(k, ord=2).item(), rel=1e-5)


def test_parameter_counts_add_up(overview, tiny_gpt2):
    assert overview.to_frame("parameters")["parameters"].sum() == overview.meta["architecture"]["n_params"]
    gpt2 = wb.model_overview(tiny_gpt2, cache=False)
    counts = dict(zip(*gpt2.to_frame("parameters")[["component", "parameters"]].T.values))
    assert counts["embeddings"] == 259 * 64 + 256 * 64 and "unembedding" not in counts  # tied
    assert len(gpt2.to_frame("matrices")) == 2 * 6  # no gate in a plain MLP


def test_tokens_table(overview):
    tokens = overview.to_frame("tokens")
    assert "".join(tokens["token"]) == overview.config.sample_text


def test_figures_have_data(overview):
    figures = overview.figures()
    assert set(figures) == {"parameters", "outliers", "norms", "effective_rank", "spectrum", "embeddings"}
    assert all(len(f.data) > 0 for f in figures.values())
    assert len(figures["norms"].data) == 7 and list(figures["norms"].data[0].x) == [0, 1]


def test_widget_updates_from_the_result(overview):
    widget = overview.widget()
    widget.layer.value = 1
    assert list(widget.spectrum_plot.data[0].y) == pytest.approx(overview.spectrum("W_Q", 1).tolist())
    widget.matrices.value = ("W_out",)
    assert [t.name for t in widget.spectrum_plot.data] == ["W_out"]
    widget.metric.value = "frobenius"
    assert widget.metric_plot.layout.yaxis.title.text == "Frobenius norm"


def test_cli_info_overview_and_errors(capsys, tmp_path):
    assert main(["info", "--model", "tiny-gpt2"]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    assert main(["overview", "--model", "tiny-llama", "--top", "3"]) == 0
    assert "outlier_ratio" in capsys.readouterr().out
    assert main(["info", "--model", "no such model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("workbench: error: unknown model")
    assert main(["models"]) == 0 and "tiny-llama" in capsys.readouterr().out


def test_cli_report(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "--model", "tiny-llama", "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_cli_report_skips_an_analysis_the_model_cannot_run(tmp_path, capsys, monkeypatch):
    from workbench.engine import registry

    def refuse(model, config):  # as an analysis does for a model it cannot read (e.g. MoE MLPs have no single W_in)
        raise wb.UnsupportedModelError(f"{model.name}'s MLPs are mixtures of experts")

    spec = registry.get_analysis("bilinear_replacement")  # version -1: no cached result stands in for the refusal
    monkeypatch.setitem(registry._REGISTRY, spec.name, dataclasses.replace(spec, compute=refuse, version=-1))
    out = tmp_path / "r.html"
    assert main(["report", "--model", "tiny-gpt2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped bilinear_replacement" in captured.err and "mixtures of experts" in captured.err
    page = out.read_text()
    assert "Super weights" in page and "ReAGent" in page and "bilinear replacement" not in page.lower()


@pytest.mark.parametrize("shape", [(3, 5, 9), (2, 9, 5), (4, 4)])
def test_singular_values_match_svd(shape):
    from workbench.linalg import singular_values

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    w[..., 0, :] *= 50  # a wide spread of singular values
    assert torch.allclose(singular_values(w), torch.linalg.svdvals(w.double()).float(), rtol=1e-5, atol=1e-6)
