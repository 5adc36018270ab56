"""Attribution you can trust: the authors' exact metric formula, probe precision in the cache key, ReAGent's
uncertainty (intervals, probability of ranking first, ties, adaptive probes) and its estimand (exact mu)."""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from support.attribution_planted import build_copy_model
from workbench.analyses.attribution.faithfulness import soft_normalised
from workbench.analyses.attribution.reagent import ReagentConfig, resolve_probe_dtype
from workbench.cache import ResultCache, cache_key

PROMPT = "The quick brown fox jumps over"


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    return wb.load_model(str(build_copy_model(tmp_path_factory.mktemp("planted") / "copy")), progress=False)


def test_soft_ns_nc_formulas_against_a_hand_computation():
    # sqrt p = (0.8, 0.6), sqrt q_suff = (0.6, 0.8), sqrt q_comp = (1, 0), sqrt p_zero = (0, 1)
    p, qs, qc, pz = (torch.tensor(v) for v in ([0.64, 0.36], [[0.36, 0.64]], [[1.0, 0.0]], [0.0, 1.0]))
    # authors: D = sum (sqrt p - sqrt q)^2 / sqrt 2: D(p, p_zero) = 0.8 / r2, D(p, q_suff) = 0.08 / r2,
    # D(p, q_comp) = 0.4 / r2; Soft-NS = (0.8 - 0.08) / 0.8 = 0.9, Soft-NC = 0.4 / 0.8 = 0.5
    assert soft_normalised(p, qs, qc, pz, "authors") == pytest.approx((0.9, 0.5), abs=1e-6)
    # Hellinger: D = sqrt(sum) / r2: S0 = 1 - sqrt(0.4), Soft-S = 1 - 0.2, Soft-C = sqrt(0.2)
    s0 = 1 - math.sqrt(0.4)
    assert soft_normalised(p, qs, qc, pz, "hellinger") == pytest.approx(
        ((0.8 - s0) / (1 - s0), math.sqrt(0.2) / (1 - s0)), abs=1e-6)
    assert soft_normalised(p, qs, qc, pz, "hellinger")[0] != pytest.approx(0.9, abs=0.05)  # the formulas differ


def test_probe_precision_is_in_the_cache_key(copy_model, monkeypatch):
    config = ReagentConfig(prompt=PROMPT)  # probe_dtype="auto"
    fingerprint = copy_model.fingerprint()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    fp32 = resolve_probe_dtype(copy_model, config)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    bf16 = resolve_probe_dtype(copy_model, config)
    assert (fp32.probe_dtype, bf16.probe_dtype) == (None, "bfloat16")
    assert cache_key("reagent", fp32, fingerprint) != cache_key("reagent", bf16, fingerprint)
    # negative control: keyed on the unresolved "auto", the two runs would share one key
    assert cache_key("reagent", config, fingerprint) == cache_key("reagent", config, fingerprint)


def test_a_bfloat16_run_is_not_served_a_float32_result(copy_model, monkeypatch, tmp_path):
    cache = ResultCache(tmp_path)
    options = dict(prompt=PROMPT, n_probes=2, max_steps=20, keep_top_n=3, cache=cache)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    a = wb.reagent(copy_model, **options)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    b = wb.reagent(copy_model, **options)
    assert (a.config.probe_dtype, b.config.probe_dtype) == (None, "bfloat16")
    assert (a.probe_dtype, b.probe_dtype) == ("float32", "bfloat16")
    assert cache.stats["misses"] == 2
