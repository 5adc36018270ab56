"""Attribution on the embedded SmolLM2-135M-Instruct (real tier)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.analyses.attribution import baselines
from workbench.analyses.attribution.agreement import spearman
from workbench.analyses.attribution.common import prepare

pytestmark = pytest.mark.real

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def default_run(embedded):
    fingerprint = embedded.fingerprint()
    result = wb.reagent(embedded, cache=False)  # exactly what `workbench report` runs
    assert embedded.fingerprint() == fingerprint  # the model is never edited
    return result


def test_default_reagent_on_the_embedded_model(default_run, embedded):
    targets = default_run.tables["targets"]
    assert list(targets["target"]) == [" Paris"]
    assert targets["probability"][0] == pytest.approx(0.304, abs=0.02)
    imp = default_run.importance(0)
    assert math.isnan(imp[0]) and torch.isfinite(imp[1:]).all()  # BOS; every prompt token has an estimate
    assert (default_run.tensors["replaced_count"][0, 1:] >= 4).all()  # from at least MIN_REPLACED update steps
    assert (default_run.tensors["importance_low"][0, 1:] <= imp[1:]).all()
    assert (imp[1:] <= default_run.tensors["importance_high"][0, 1:]).all()
    assert default_run.tensors["probe_stopped"].all()  # the probes stop well before max_steps
    assert default_run.tensors["probe_steps"].max() < default_run.config.max_steps
    table = default_run.to_frame()
    assert len(table) == 10 and sorted(table["rank"]) == list(range(1, 11))  # 10 prompt tokens after BOS
    assert "Paris" in wb.build_report([default_run])


def test_reagent_is_deterministic_on_the_embedded_model(embedded):
    options = dict(cache=False, n_probes=4, max_steps=20, seed=7)
    a = wb.reagent(embedded, prompt=PROMPT, **options)
    b = wb.reagent(embedded, prompt=PROMPT, **options)
    assert torch.equal(a.tensors["probe_steps"], b.tensors["probe_steps"])
    assert torch.allclose(a.tensors["importance"].nan_to_num(), b.tensors["importance"].nan_to_num())


def test_baselines_on_the_embedded_model(embedded):
    seq = prepare(embedded, PROMPT, None, max_new_tokens=2)
    for method in baselines.BASELINES:
        imp = baselines.baseline_importance(embedded, seq, method)
        assert imp.shape == (2, len(seq.ids) - 1)
        assert torch.isnan(imp[:, 0]).all() and torch.isnan(imp[0, -1])  # BOS; beyond target 0's context
        assert torch.isfinite(imp[1, 1:]).all(), method
        if method.startswith("attention"):
            assert (imp[1, 1:] >= 0).all()


def test_compare_attributions_on_the_embedded_model(embedded):
    result = wb.compare_attributions(embedded, prompts=[PROMPT], methods=["reagent", "occlusion", "integrated_gradients"],
                                     cache=False, max_new_tokens=1, n_probes=4, max_steps=40)
    summary = result.tables["summary"].set_index(["method", "metric"])
    # removing the tokens occlusion / integrated gradients rank first hurts more than removing random ones
    for method in ("occlusion", "integrated_gradients"):
        assert summary.loc[(method, "comp_aopc"), "mean"] > summary.loc[("random", "comp_aopc"), "mean"]
    assert summary.loc[("occlusion", "soft_nc"), "log_ratio"] > 0
    assert set(result.to_frame()["metric"]) >= {"soft_ns", "soft_nc", "comp@0.1", "suff@0.5", "comp_aopc", "suff_aopc"}


REFERENCE = Path(__file__).parents[2] / "data" / "inseq_reagent.json"


def _recorded_inseq_runs() -> tuple[dict, list[list[torch.Tensor]]]:
    ref = json.loads(REFERENCE.read_text())
    runs = [[torch.tensor(run) for run in case["inseq"] if not math.isnan(run[0])] for case in ref["prompts"]]
    return ref, runs  # NaN: no Inseq probe stopped


def test_the_recorded_inseq_reference_has_power():
    """The recorded reference (``benchmarks/reagent.py --record``: Inseq 0.7.1, 16 probes, 100 steps, 6 seeds, on
    prompts whose probes run tens of steps) must agree with itself above chance, and the test against it must
    reject uniform random importance: here in at least 38 of 40 seeds per prompt. The former recording (8 probes,
    60 steps, many runs stopped after one step) agreed with itself at rho 0.02, and random importance passed it."""
    from workbench.analyses.attribution.agreement import equivalence

    _, cases = _recorded_inseq_runs()
    gen = torch.Generator().manual_seed(0)
    for inseq in cases:
        floor = [spearman(a, b) for a, b in itertools.combinations(inseq, 2)]
        assert len(inseq) >= 5 and sum(floor) / len(floor) > 0.2, floor
        rejected = sum(not equivalence([torch.rand(len(inseq[0]), generator=gen) for _ in range(2)], inseq,
                                       n_boot=300, seed=s)["noninferior"] for s in range(40))
        assert rejected >= 38, rejected


def test_reagent_agrees_with_inseq_as_inseq_agrees_with_itself(embedded):
    """Inseq 0.7.1's ReAGent, recorded on the same weights, ids and settings: ours must agree with Inseq's runs at
    least as well as they agree with each other, less 0.1 in Spearman, read as Inseq reads its probes (softmax) (the one-sided half of
    :func:`~workbench.analyses.attribution.agreement.equivalence`; a few Inseq runs can agree with ours better than
    with each other by chance). The test above shows it rejecting random importance; test_attribution_trust.py
    shows it rejecting a sign-flipped update. Two of our seeds (16 probes cost ~40 s a run here) on the first
    recorded prompt, where they are non-inferior (lower bound -0.03). On the second, the 6 Inseq runs leave the
    interval too wide to conclude either way (difference +0.02, interval -0.20 .. +0.23 with 2 to 4 of our seeds;
    benchmarks/README.md), so it is not asserted there.
    """
    from workbench.analyses.attribution.agreement import equivalence

    ref, cases = _recorded_inseq_runs()
    case, inseq = ref["prompts"][0], cases[0]
    ours = [wb.reagent(embedded, prompt=case["prompt"], target=case["target"], prepend_bos=False, probe_dtype=None,
                       seed=seed, cache=False, adaptive=False, reading="softmax", **ref["params"]).importance(0)
            for seed in range(2)]  # Inseq's reading of the probes
    result = equivalence(ours, inseq)
    assert result["noninferior"], (case["prompt"], result)
