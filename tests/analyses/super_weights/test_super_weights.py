"""Super weights, fast tier: planted super weights in tiny random models found exactly, iterative
rounds, restoration bit for bit, quantization maths, corpus, published index, errors, figures, CLI."""

from __future__ import annotations

import dataclasses
import html
import math

import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.analyses.super_weights import DEFAULT_PROMPTS, compare_published, published_for, published_index
from workbench.analyses.super_weights.evaluate import eval_windows
from workbench.analyses.super_weights.experiments import top_outliers
from workbench.analyses.super_weights.quantize import blockwise_rtn
from workbench.analyses.super_weights.scan import scan
from workbench.cli import main
from workbench.corpus import eval_text, mean_loss, token_windows
from workbench.errors import InputError, UnsupportedModelError
from workbench.render.registry import extra_html

FAST = dict(eval_windows=2, window=32, cache=False)  # small evaluation: tiny models, seconds


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.hf_model.state_dict().items()}


def _same(model, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.hf_model.state_dict().items())


def _hidden(model, layer: int) -> torch.Tensor:
    """X = the input of W_out at ``layer`` on the default prompts: [tokens, d_mlp] (test-side reference)."""
    ids, mask = model.to_tokens_batch(list(DEFAULT_PROMPTS))
    _, cache = model.run_with_cache(ids, names=[wb.hook_names.mlp_post(layer)])
    return cache[wb.hook_names.mlp_post(layer)][mask.bool()]


def plant(model, gen: torch.Generator, *, second: bool = False):
    """Plant a super weight at random (layer, row, col): its input channel boosted, its weight large.

    With ``second``, a weaker one in the same row and layer whose largest contribution is at most
    0.3 x the first's, so one scan finds only the first and the next round finds the second.
    """
    info = model.facts
    layer = int(torch.randint(info.n_layers, (1,), generator=gen))
    row = int(torch.randint(info.d_model, (1,), generator=gen))
    cols = torch.randperm(info.d_mlp, generator=gen)[:2].tolist()
    mlp = model.mlp_weights(layer)
    with torch.no_grad():
        mlp.W_in[:, cols[0]] *= 40.0  # a massive hidden activation in channel col
        x = _hidden(model, layer)
        mlp.W_out[cols[0], row] = 100.0 / x[:, cols[0]].abs().max()  # largest contribution: 100
        planted = [(layer, row, cols[0])]
        if second:
            mlp.W_in[:, cols[1]] *= 10.0
            x = _hidden(model, layer)
            mlp.W_out[cols[1], row] = 30.0 / x[:, cols[1]].abs().max()  # at most 30
            planted.append((layer, row, cols[1]))
    return planted


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_super_weight_found_exactly(name, seed):
    model = wb.load_model(name)
    (layer, row, col), = plant(model, torch.Generator().manual_seed(seed))
    result = wb.super_weights(model, **FAST)
    table = result.candidates
    assert result.coordinates() == ((layer, row, col),)
    hit = table[(table.layer == layer) & (table.row == row) & (table.col == col)].iloc[0]
    assert hit["round"] == 0 and hit["role"] == "super weight"
    assert hit["weight"] == pytest.approx(float(model.mlp_weights(layer).W_out[col, row]))
    assert hit["weight_rank"] == 1 and hit["share"] > 0.5
    assert hit["kl"] > 1000 * result.to_frame("controls")["kl"].max()  # untrained: KL, not loss, shows the damage
    layers = result.to_frame("layers")
    assert layers[(layers["round"] == 0) & layers.spike]["layer"].tolist() == [layer]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_planted_large_weight_without_input_spike(name):
    # Only the weight is planted (~100x the initial weight scale); its input channel stays ordinary.
    for seed in range(3):
        model = wb.load_model(name)
        gen = torch.Generator().manual_seed(100 + seed)
        layer, row = int(torch.randint(2, (1,), generator=gen)), int(torch.randint(64, (1,), generator=gen))
        col = int(torch.randint(model.facts.d_mlp, (1,), generator=gen))
        with torch.no_grad():
            model.mlp_weights(layer).W_out[col, row] = 10.0
        assert wb.super_weights(model, **FAST).coordinates() == ((layer, row, col),)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_second_super_weight_needs_the_iterative_round(name):
    model = wb.load_model(name)
    first, second = plant(model, torch.Generator().manual_seed(7), second=True)
    before = _state(model)
    result = wb.super_weights(model, **FAST)
    rounds = {(r.layer, r.row, r.col): r.round for r in result.candidates.itertuples()}
    assert rounds[first] == 0 and rounds[second] == 1
    assert set(result.coordinates()) >= {first, second}
    one_round = wb.super_weights(model, max_rounds=1, **FAST)
    assert second not in set(one_round.coordinates(None))
    assert _same(model, before)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_one_input_channel_feeding_three_rows(name):
    # Like Meta-Llama-3-8B's (1, 788, 2427), (1, 1384, 2427), (1, 4062, 2427): one per round.
    model = wb.load_model(name)
    mlp = model.mlp_weights(1)
    with torch.no_grad():
        mlp.W_in[:, 10] *= 40.0
        mlp.W_out[10, 3], mlp.W_out[10, 20], mlp.W_out[10, 41] = 30.0, 20.0, -12.0
    table = wb.super_weights(model, **FAST).candidates
    assert table[["layer", "row", "col", "round"]].values.tolist() == [[1, 3, 10, 0], [1, 20, 10, 1], [1, 41, 10, 2]]
    assert set(table["role"]) == {"super weight"}


def test_scan_streams_the_same_numbers_as_a_cached_run(tiny_llama):
    ids, mask = tiny_llama.to_tokens_batch(["Summer is hot. Winter is", "Hello"])
    stats = scan(tiny_llama, ids, mask)
    names = [wb.hook_names.mlp_post(l) for l in range(2)] + [wb.hook_names.mlp_out(l) for l in range(2)]
    _, cache = tiny_llama.run_with_cache(ids, names=names)
    m = mask.bool()
    for l in range(2):
        x, y = cache[names[l]][m], cache[names[2 + l]][m]  # [tokens, d]: padding dropped
        assert torch.allclose(stats.in_channel_max[l], x.abs().amax(0))
        assert torch.allclose(stats.out_channel_max[l], y.abs().amax(0))
        assert stats.out_value[l].abs() == pytest.approx(y.abs().max().item())
        b, p, j = stats.out_spike[l].tolist()
        contrib = cache[names[l]][b, p] * tiny_llama.mlp_weights(l).W_out[:, j]
        assert stats.top_col[l] == contrib.abs().argmax() and stats.top_contribution[l].abs() == pytest.approx(contrib.abs().max().item(), rel=1e-5)


def test_experiments_restore_the_model_bit_for_bit(tiny_llama):
    model = tiny_llama
    before = _state(model)
    coords = ((0, 5, 7), (1, 60, 100))
    fp = model.fingerprint()
    kw = dict(weights=coords, eval_windows=2, window=32, cache=False)
    prune = wb.prune_super_weights(model, **kw)
    assert _same(model, before) and model.fingerprint() == fp
    settings = prune.quality["setting"].tolist()
    assert settings == ["intact", "pruned", "pruned + super activation restored"]
    assert set(prune.to_frame("next_tokens")["setting"]) == set(settings)
    scale = wb.scale_super_weights(model, scales=(0.0, 1.0, 2.0), **kw)
    q = scale.quality.set_index("setting")
    windows = eval_windows(model, None, 2, 32)
    W0, W1 = model.mlp_weights(0).W_out, model.mlp_weights(1).W_out
    with model.restoring(W0, W1), torch.no_grad():  # the same edit, made here by hand
        W0[7, 5], W1[100, 60] = 0.0, 0.0
        by_hand = mean_loss(model, windows)
    assert q.loc["scale 0", "loss"] == pytest.approx(by_hand, abs=1e-9) and q.loc["scale 0", "kl"] > 0
    assert _same(model, before)
    out = wb.prune_outliers(model, top_fraction=1e-3, **kw)
    assert out.meta["n_outliers"] == round(1e-3 * 2 * 128 * 64) and _same(model, before)
    quant = wb.quantize_super_weights(model, bits=(2,), block_sizes=(16,), **kw)
    assert len(quant.quality) == 3 and (quant.quality.delta_loss.iloc[1:].abs() > 0).all()
    assert _same(model, before)
    # An error in the middle of an experiment still restores the weights.
    with pytest.raises(InputError):
        wb.quantize_super_weights(model, bits=(99,), block_sizes=(16,), **kw)
    assert _same(model, before) and model.fingerprint() == fp


def test_restoring_the_super_activation_recovers_the_planted_model():
    model = wb.load_model("tiny-llama")
    coords = tuple(plant(model, torch.Generator().manual_seed(5)))
    prune = wb.prune_super_weights(model, weights=coords, eval_windows=2, window=32, cache=False)
    kl = dict(zip(prune.quality.setting, prune.quality.kl))  # untrained: KL from intact, not loss, measures damage
    assert kl["intact"] == 0 and kl["pruned"] > 1e-3
    assert kl["pruned + super activation restored"] < 0.9 * kl["pruned"]  # only the peak positions are written back
    # Zeroing W_out[col, row] changes only channel row of that MLP's output: writing all of it back undoes the pruning.
    full = wb.prune_super_weights(model, weights=coords, eval_windows=2, window=32, restore_fraction=0.0, cache=False).quality
    assert full.kl.iloc[2] < 1e-9 and full.loss.iloc[2] == pytest.approx(full.loss.iloc[0], abs=1e-6)


def test_blockwise_rtn_matches_a_per_tile_reference():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 50, 37, generator=gen)
    q = blockwise_rtn(w, 3, 16)
    for b in range(2):
        for r0 in range(0, 50, 16):
            for c0 in range(0, 37, 16):
                tile = w[b, r0:r0 + 16, c0:c0 + 16]
                lo, hi = tile.min(), tile.max()
                step = (hi - lo) / 7
                ref = ((tile - lo) / step).round() * step + lo
                assert torch.allclose(q[b, r0:r0 + 16, c0:c0 + 16], ref, atol=1e-5)
    assert len(torch.unique(q[0, :16, :16])) <= 8
    w[0, 3, 3] = 50.0  # an outlier: clipping keeps the rest of its tile precise
    plain, clipped = blockwise_rtn(w, 4, 16), blockwise_rtn(w, 4, 16, clip_z=3.0)
    rest = torch.ones(16, 16, dtype=torch.bool)
    rest[3, 3] = False
    err = lambda q_: (q_[0, :16, :16] - w[0, :16, :16])[rest].abs().mean()
    assert err(clipped) < 0.5 * err(plain)
    assert blockwise_rtn(w, 4, 1000).shape == w.shape  # blocks larger than the matrix: one tile
    clipped = blockwise_rtn(w, 4, 16, clip_z=2.0)
    for r0, c0 in ((48, 32), (0, 0)):  # a ragged edge tile (padding must not enter its statistics) and a full one
        tile = w[0, r0:r0 + 16, c0:c0 + 16]
        mean, std = tile.mean(), tile.std(correction=0)
        lo, hi = max(tile.min(), mean - 2 * std), min(tile.max(), mean + 2 * std)
        step = (hi - lo) / 15
        ref = ((tile.clamp(lo, hi) - lo) / step).round() * step + lo
        assert torch.allclose(clipped[0, r0:r0 + 16, c0:c0 + 16], ref, atol=1e-5)


def test_top_outliers_are_the_largest_weights(tiny_gpt2):
    W = tiny_gpt2.W_out.abs()
    got = top_outliers(tiny_gpt2, 5, exclude=())
    values = sorted((W[l, c, r].item() for l, r, c in got), reverse=True)
    assert values == pytest.approx(W.flatten().topk(5).values.tolist())
    first = got[0]
    assert first not in top_outliers(tiny_gpt2, 5, exclude=(first,))


def test_corpus_and_windows(tiny_llama, tmp_path):
    text = eval_text()
    assert len(text.split()) > 2000
    windows = token_windows(tiny_llama, window=32, max_windows=5)
    assert windows.shape == (5, 32) and (windows[:, 0] == tiny_llama.tokenizer.bos_token_id).all()
    own = tmp_path / "mine.txt"
    own.write_text("A short text of my own, long enough for one window.", encoding="utf-8")
    assert eval_text(own).startswith("A short")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        eval_text(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="does not exist"):
        eval_text(tmp_path / "missing.txt")


def test_published_index_and_lenient_matching():
    index = published_index()
    assert len(index) == 24 and set(index.columns) >= {"model", "layer", "row", "col"}
    assert published_for("meta-llama/Llama-2-7b-hf")[["layer", "row", "col"]].values.tolist() == [[1, 2533, 7890]]
    assert len(published_for("/models/OLMo-7B-0724-hf/")) == 4
    assert published_for("meta-llama/Llama-2-7b-chat-hf") is None and published_for("smollm2-135m-instruct") is None
    table = compare_published("Meta-Llama-3-8B", [(1, 788, 2427), (5, 1, 1)])
    assert table.found.sum() == 2 and table.published.sum() == 3 and len(table) == 4


def test_scan_of_a_model_in_the_published_index(tmp_path):
    from workbench.models.tiny import byte_tokenizer, tiny_model

    folder = tmp_path / "Llama-2-7b-hf"  # a tiny stand-in under a published model's name
    hf = tiny_model("tiny-llama", seed=1)
    with torch.no_grad():  # plant at the published layer 1, row / col folded into the tiny shape
        hf.model.layers[1].mlp.up_proj.weight[7] *= 40.0
        hf.model.layers[1].mlp.down_proj.weight[33, 7] = 50.0
    hf.save_pretrained(folder)
    byte_tokenizer(tmp_path / "cache").save_pretrained(folder)
    model = wb.load_model(str(folder))
    result = wb.super_weights(model, **FAST)
    assert result.coordinates() == ((1, 33, 7),)  # HF down_proj.weight[row, col]
    published = pd.DataFrame(result.meta["published"])
    assert published[["layer", "row", "col", "published", "found"]].values.tolist() == [
        [1, 33, 7, False, True], [1, 2533, 7890, True, False]]
    assert "published super weights found" in dict(result.summary())["published index"]


def test_clear_errors(tiny_llama, tiny_gpt2):
    with pytest.raises(InputError, match="prompt list is empty"):
        wb.super_weights(tiny_llama, prompts=[], cache=False)
    with pytest.raises(InputError, match="max_rounds"):
        wb.super_weights(tiny_llama, max_rounds=0, cache=False)
    with pytest.raises(InputError, match="no super weights given"):
        wb.prune_super_weights(tiny_llama, weights=(), cache=False)
    with pytest.raises(InputError, match="outside"):
        wb.scale_super_weights(tiny_llama, weights=((0, 64, 0),), cache=False)

    class NoMLP:  # a model whose MLP output hooks / W_out are not exposed
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def hook_names(self):
            return [n for n in self._inner.hook_names() if "mlp" not in n]

    with pytest.raises(UnsupportedModelError, match="MLP"):
        wb.super_weights(NoMLP(tiny_gpt2), cache=False)


def test_clear_error_without_an_mlp_output_matrix(tiny_llama, monkeypatch):
    from workbench.models import weights

    real_get = weights._get
    monkeypatch.setattr(weights, "_get", lambda module, name: None if name == "W_out" else real_get(module, name))
    with pytest.raises(UnsupportedModelError, match="W_out"):
        wb.super_weights(tiny_llama, cache=False)


def test_result_roundtrip_figures_widget_and_cli(tmp_path, capsys):
    model = wb.load_model("tiny-llama")
    plant(model, torch.Generator().manual_seed(11))
    result = wb.super_weights(model, **FAST)
    path = result.save(tmp_path / "sw.safetensors")
    loaded = wb.Result.load(path)
    pd.testing.assert_frame_equal(loaded.candidates, result.candidates)
    intact, ablated = loaded.trace(0)
    assert intact.shape == (3,) and ablated[-1] < intact[-1]  # the super activation collapses without it
    tidy = loaded.to_frame("super_activation")
    assert len(tidy) == 3 * len(loaded.candidates) and tidy["zeroed"].iloc[:3].tolist() == pytest.approx(ablated.tolist())
    figures = result.figures()
    assert {"spikes", "trace"} <= set(figures) and all(len(f.data) for f in figures.values())
    assert figures["spikes"].layout.yaxis.type == "log"
    html = extra_html(result)
    assert "<script" not in html and "super weight" in html
    scale = wb.scale_super_weights(model, scales=(0.0, 0.5, 1.0), eval_windows=2, window=32, cache=False)
    widget = result.widget(scale=scale)
    widget.scale.value = 0.0
    assert widget.quality_plot.data[-1].x == (0.0,)
    assert {t.name for t in widget.tokens_plot.data} == {"scale 0"}
    assert "W_out[" in widget.details.value and "super weight" in widget.details.value
    lazy = result.widget(model=model)  # no sweep given: the button computes it (cached) for the slider
    assert lazy.scale.disabled and not lazy.compute_button.disabled
    lazy.compute_button.click()
    assert not lazy.scale.disabled and lazy.scale.value == 1.0 and 3.0 in lazy.scale.options
    cli = ["super-weights", "--model", "tiny-llama", "--eval-windows", "2", "--window", "32", "--no-cache"]
    assert main(cli) == 0
    assert "no layer spiked" in capsys.readouterr().out  # an untouched random model has no super weight
    assert main([*cli, "--out-factor", "1", "--max-rounds", "1"]) == 0  # every layer counts as spiking
    out = capsys.readouterr().out
    assert "role" in out and "candidates  2 in 1 scan round(s)" in out
    assert math.isfinite(result.meta["intact_loss"])


def test_report_section_escapes_model_text():
    model = wb.load_model("tiny-gpt2")
    plant(model, torch.Generator().manual_seed(4))
    evil = "<img src=x onerror=alert(1)> is a tag"
    result = wb.super_weights(model, prompts=[evil, "Summer is hot. Winter is"], **FAST)
    assert result.super_weights.shape[0] == 1
    # The tiny model's byte-level tokens hold one character: give the spike a whole tag as its token, as a
    # real tokenizer could, so that the section shows it escaped or fails.
    candidates = result.candidates.assign(token=evil)
    page = wb.build_report([dataclasses.replace(result, tables={**result.tables, "candidates": candidates})])
    assert "Super weights" in page and "<img src=x" not in page
    assert html.escape(repr(evil)) in page and html.escape(evil, quote=False) in page  # the list, the table
