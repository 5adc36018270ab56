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
    assert math.isnan(imp[0])  # BOS
    assert torch.nansum(imp).item() == pytest.approx(1.0, abs=1e-5)
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


def test_reagent_agrees_with_inseq_as_inseq_agrees_with_itself(embedded):
    """Inseq 0.7.1's ReAGent, recorded on the same weights, ids and settings (``benchmarks/reagent.py --record``):
    our runs must be equivalent to Inseq's as Inseq's are to each other (Spearman over the prompt's tokens,
    :func:`~workbench.analyses.attribution.agreement.equivalence`, margin 0.1). Such a test has power only when the
    reference agrees with itself: the current recording (8 probes, 60 steps, many runs stopped after one step) has
    a noise floor of rho ~0.02, which uniform random importance matches too (it passed the former test in 186 of
    200 seeds), so until it is re-recorded on prompts whose probes run >= 20 steps this test reports XFAIL."""
    from workbench.analyses.attribution.agreement import equivalence

    ref = json.loads(REFERENCE.read_text())
    floors = []
    for case in ref["prompts"]:
        inseq = [torch.tensor(run) for run in case["inseq"] if not math.isnan(run[0])]  # NaN: no Inseq probe stopped
        floors += [spearman(a, b) for a, b in itertools.combinations(inseq, 2)]
    if sum(floors) / len(floors) < 0.3:
        pytest.xfail(f"the recorded Inseq reference agrees with itself at rho {sum(floors) / len(floors):.2f}: "
                     "no test on it can tell ReAGent from random importance; re-record it")
    for case in ref["prompts"]:
        inseq = [torch.tensor(run) for run in case["inseq"] if not math.isnan(run[0])]
        ours = [wb.reagent(embedded, prompt=case["prompt"], target=case["target"], prepend_bos=False, probe_dtype=None,
                           seed=seed, cache=False, adaptive=False, **ref["params"]).importance(0) for seed in range(4)]
        result = equivalence(ours, inseq)
        assert result["equivalent"], (case["prompt"], result)
