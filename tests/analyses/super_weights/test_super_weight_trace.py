"""Super-weight trace (the link from a super weight to the heads and tokens around it): exact
decomposition of the stream into parts, a planted driver head found, readers measured as the
attention patterns say, errors, restoration, widget; real tier on the embedded model."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.analyses.super_weights.trace import channel_contributions, mlp_input_names, residual_parts
from workbench.errors import InputError
from workbench.models import hook_names as hn

from support.planted import planted_super_weight as _planted

PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_parts_sum_to_the_stream_and_to_the_measured_pre_activation(name):
    model, (layer, row, col) = _planted(name)
    ids = model.to_tokens(PROMPT)
    names = sorted({hn.resid_mid(layer), hn.mlp_pre(layer), *mlp_input_names(model, layer)})
    _, cache = model.run_with_cache(ids, names=names)
    for pos in (0, 3, ids.shape[1] - 1):
        labels, parts = residual_parts(model, cache, layer, pos)
        assert len(labels) == parts.shape[0] == 1 + 2 * (model.facts.n_heads + 1) + layer
        torch.testing.assert_close(parts.sum(0), cache[hn.resid_mid(layer)][0, pos].float(), rtol=1e-5, atol=1e-5)
        contrib = channel_contributions(model, parts, layer, col)
        key = "gate" if model.facts.mlp == "gated" else "up"
        total = contrib[key].sum() + contrib[f"{key}_const"]
        torch.testing.assert_close(total, cache[hn.mlp_pre(layer)][0, pos, col].float(), rtol=1e-4, atol=1e-4)


def test_trace_of_a_planted_weight_with_a_planted_driver_head():
    model, (layer, row, col) = _planted("tiny-llama")
    # Plant a driver: head 2 of layer 0 writes along the direction layer 1 reads channel ``col`` from.
    mlp, gain = model.mlp_weights(layer), model.norm_gain(layer, "mlp")
    direction = gain * (mlp.W_gate[:, col] + mlp.W_in[:, col])
    W_O = model.attention_weights(0).W_O  # [head, d_head, d_model]
    with torch.no_grad():
        W_O[2] += 3.0 * torch.outer(torch.ones(W_O.shape[1]), direction / direction.norm())
    before = model.fingerprint()
    trace = wb.trace_super_weight(model, weight=(layer, row, col), prompt=PROMPT, cache=False)
    assert model.fingerprint() == before  # the zeroed weight was put back

    tokens = trace.to_frame("tokens")
    pos = trace.meta["spike_position"]
    assert pos == int(tokens["mlp_out"].abs().argmax())
    # Zeroing the weight removes exactly its own product from its output channel.
    removed = tokens["mlp_out"] - tokens["mlp_out_zeroed"]
    expected = tokens["input"] * float(mlp.W_out[col, row])
    torch.testing.assert_close(torch.tensor(removed.to_numpy()), torch.tensor(expected.to_numpy()), rtol=1e-3, atol=1e-3)
    assert trace.meta["decomposition_error"] < 1e-4

    top = trace.top_drivers(1).iloc[0]
    assert (top["part"], top["kind"], top["layer"], top["head"]) == ("L0H2", "head", 0, 2)
    assert top["attends_to"]  # where that head reads from

    # Readers: the intact column is the attention mass the patterns give, recomputed here.
    readers = trace.to_frame("readers")
    spikes = trace.meta["spike_positions"]
    assert set(readers["layer"]) == set(range(layer + 1, model.facts.n_layers))
    if not readers.empty:
        _, cache = model.run_with_cache(model.to_tokens(PROMPT), names=[hn.attn_pattern(l) for l in range(layer + 1, model.facts.n_layers)])
        after = slice(max(spikes) + 1, None) if max(spikes) + 1 < len(tokens) else slice(None)
        first = readers.iloc[0]
        mass = cache[hn.attn_pattern(int(first["layer"]))][0, int(first["head"])][after][:, spikes].sum(-1).mean()
        assert first["intact"] == pytest.approx(float(mass), abs=1e-5)


def test_trace_defaults_errors_and_views(tiny_llama):
    model, weight = _planted("tiny-llama", layer=0)  # layer 1 reads it
    with pytest.raises(InputError, match="outside"):
        wb.trace_super_weight(model, weight=(5, 0, 0), cache=False)
    with pytest.raises(InputError, match="non-empty"):
        wb.trace_super_weight(model, weight=weight, prompt="", cache=False)
    with pytest.raises(InputError, match="layer, row, col"):
        wb.trace_super_weight(model, weight=(1, 2), cache=False)
    with pytest.raises(wb.UnsupportedModelError, match="no super weights"):
        wb.trace_super_weight(tiny_llama, prompt=PROMPT, cache=False)  # random weights: nothing to trace

    trace = wb.trace_super_weight(model, weight=weight, prompt=PROMPT, cache=False)
    assert set(trace.figures()) == {"tokens", "drivers", "readers"}
    assert all(len(fig.data) for fig in trace.figures().values())
    assert dict(trace.summary())["weight"] == f"layer 0 down_proj[{weight[1]}, {weight[2]}]"
    view = trace.widget()
    assert len(view.plots["drivers"].data) == 1

    # The super-weight explorer links onward: its trace button fills the trace view.
    explorer = wb.super_weights(model, eval_windows=2, window=32, cache=False).widget(model=model)
    assert not explorer.trace_button.disabled
    explorer.trace_prompt.value = PROMPT
    explorer._on_trace()
    assert len(explorer.trace_view.plots["readers"].data) == 1 and "down_proj" in explorer.trace_view.text.value
    explorer.trace_prompt.value = ""
    explorer._on_trace()  # a bad prompt is reported in the explorer, not raised, and its controls come back
    assert "non-empty" in explorer.trace_status.value and "down_proj" in explorer.trace_view.text.value
    assert not explorer.trace_button.disabled and explorer.trace_button.description == "trace this weight"


@pytest.mark.real
def test_trace_on_the_embedded_model(embedded):
    before = embedded.fingerprint()
    trace = wb.trace_super_weight(embedded)  # the strongest super weight: layer 11 [507, 1229]
    assert embedded.fingerprint() == before
    assert trace.weight[1] == 507
    assert trace.meta["decomposition_error"] < 1e-4
    assert trace.meta["spike_position"] == 0  # the super activation sits on the first token
    assert abs(trace.meta["zeroed_value"]) < 0.5 * abs(trace.meta["spike_value"])
    readers = trace.to_frame("readers")
    # The attention sink on the first token collapses in late heads when the weight is zeroed.
    assert readers["change"].min() < -0.5


def test_cli_traces_a_given_weight(capsys):
    from workbench.cli import main

    main(["super-weights", "--model", "tiny-llama", "--eval-windows", "2", "--window", "32", "--no-cache",
          "--trace", PROMPT, "--weight", "0", "3", "5"])
    out = capsys.readouterr().out
    assert "layer 0 down_proj[3, 5]" in out and "drive its input channel" in out and "L1H" in out
