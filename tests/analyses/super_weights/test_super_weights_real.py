"""Super weights, real tier: the embedded SmolLM2-135M-Instruct.

What we expect (docs/references.md, "Super weights"; seen with other code): the super activation lives in
residual channel 507; down_proj weights [507, 90] and [507, 430] in layer 2 and [507, 1229] in
layer 11 are super weights; layers 28/29 show paired spikes whose weights change little. The
analysis derives all of that itself; these tests check it, and that the model is never left edited.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

import workbench as wb
from workbench.analyses.super_weights.evaluate import eval_windows
from workbench.corpus import evaluate

pytestmark = pytest.mark.real


def _bytes_digest(model) -> str:
    """SHA-256 over every parameter's raw bytes: equal digests = bit-for-bit equal weights."""
    h = hashlib.sha256()
    for name, p in model.hf_model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def digest(embedded):
    return _bytes_digest(embedded)


@pytest.fixture(scope="module")
def detection(embedded, digest):
    result = wb.super_weights(embedded, cache=False)
    assert _bytes_digest(embedded) == digest  # the iterative rounds and ablations restored every weight
    return result


def test_known_super_weights_found_and_paired_spikes_told_apart(detection):
    table = detection.candidates
    supers = set(detection.coordinates())
    assert {(2, 507, 90), (2, 507, 430), (11, 507, 1229)} <= supers
    assert set(table["row"]) >= {507} and (table[table.role == "super weight"]["row"] == 507).mean() >= 0.5
    late = table[table.layer >= 28]  # huge spikes whose weights hardly matter
    assert set(late["role"]) <= {"paired spike", "minor"} and late["kl"].max() < 0.1 * table["kl"].max()
    pair = late[late.row == 507]
    assert set(pair["layer"]) == {28, 29} and set(pair["role"]) == {"paired spike"}
    first = table[(table.layer == 2) & (table.col == 90)].iloc[0]
    second = table[(table.layer == 2) & (table.col == 430)].iloc[0]
    assert first["round"] == 0 and second["round"] >= 1  # [507, 430] shows only once [507, 90] is zeroed
    assert second["weight_rank"] == 1  # the largest |w| of its matrix
    assert detection.meta["loss_without_super"] > detection.meta["intact_loss"] + 1.0


def test_ablation_effect_thousands_of_times_random(embedded, detection, digest):
    supers = detection.super_weights
    controls = detection.to_frame("controls")
    # A few more random weights of the strongest super weight's matrix, zeroed one at a time here.
    config = detection.config
    windows = eval_windows(embedded, None, config.eval_windows, config.window)
    intact, _, _ = evaluate(embedded, windows, batch_size=config.batch_size)
    assert intact == pytest.approx(detection.meta["intact_loss"], abs=1e-6)
    layer = int(supers.loc[supers.kl.idxmax(), "layer"])
    W_out = embedded.mlp_weights(layer).W_out
    gen = torch.Generator().manual_seed(123)
    random_deltas = list(controls["delta_loss"])
    for col, row in zip(torch.randint(0, W_out.shape[0], (2,), generator=gen), torch.randint(0, W_out.shape[1], (2,), generator=gen)):
        with embedded.restoring(W_out), torch.no_grad():
            W_out[col, row] = 0.0
            random_deltas.append(evaluate(embedded, windows, batch_size=config.batch_size)[0] - intact)
    noise = max(abs(d) for d in random_deltas)
    assert noise < 1e-3
    assert (supers["delta_loss"] > 1000 * noise).all(), (supers[["layer", "row", "col", "delta_loss"]], noise)
    assert _bytes_digest(embedded) == digest


def test_super_activation_trace(detection):
    table = detection.candidates
    index = int(table.index[(table.layer == 11) & (table.col == 1229)][0])
    intact, ablated = detection.trace(index)  # [layer + 1]: embeddings, then after each layer
    assert intact[12] > 5000 and intact[12] > 3 * ablated[12]  # created by layer 11 (other weights add the rest) ...
    assert intact[2] == pytest.approx(ablated[2])  # ... and nothing before it changes
    assert intact[-1] < 0.25 * intact[12]  # mostly removed again at the end (layers 28/29)


def test_experiments_restore_the_embedded_model(embedded, detection, digest):
    weights = detection.coordinates()
    kw = dict(weights=weights, eval_windows=3, window=64, cache=False)
    prune = wb.prune_super_weights(embedded, **kw)
    assert _bytes_digest(embedded) == digest
    loss = dict(zip(prune.quality.setting, prune.quality.loss))
    assert loss["pruned"] > loss["intact"] + 1.0
    assert loss["intact"] < loss["pruned + super activation restored"] < loss["pruned"]
    tokens = prune.to_frame("next_tokens")
    top = tokens[(tokens["rank"] == 1) & (tokens["prompt"] == "The capital of France is")].set_index("setting")["token"]
    assert top["intact"].strip() == "Paris" and top["pruned"].strip() != "Paris"
    assert top["pruned + super activation restored"].strip() == "Paris"

    scale = wb.scale_super_weights(embedded, scales=(0.0, 1.0, 2.0), **kw)
    q = scale.quality.set_index("setting")
    assert q.loc["scale 0", "loss"] == pytest.approx(loss["pruned"], abs=1e-6)  # scale 0 = pruned
    assert q.loc["scale 0", "loss"] > q.loc["intact", "loss"] + 1.0 and q.loc["scale 2", "kl"] > 0
    assert _bytes_digest(embedded) == digest

    quant = wb.quantize_super_weights(embedded, bits=(3,), block_sizes=(512,), **kw)
    assert len(quant.quality) == 3 and (quant.quality["delta_loss"].iloc[1:] > 0).all()
    assert _bytes_digest(embedded) == digest

    outliers = wb.prune_outliers(embedded, **kw)
    o = outliers.quality.set_index("setting")["loss"]
    assert o.iloc[2] < o.iloc[1]  # other outliers matter less than the few super weights
    assert _bytes_digest(embedded) == digest
