"""Baselines against from-scratch computations, and the retention-controlled faithfulness metrics.

Captum is not a test dependency: each baseline is recomputed here directly with autograd / the HF
model (benchmarks/attribution_baselines.py compares with Captum and Inseq on the embedded model).
"""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from support.attribution_planted import COPY_POSITION, build_copy_model
from workbench.analyses.attribution import baselines
from workbench.analyses.attribution.common import prepare
from workbench.analyses.attribution.faithfulness import FaithfulnessParams, faithfulness, retention_probabilities, summarise
from workbench.analyses.attribution.result import target_probabilities

PROMPT = "The quick brown fox jumps over"


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    folder = build_copy_model(tmp_path_factory.mktemp("planted") / "copy")
    return wb.load_model(str(folder), progress=False)


def _logp(model, x: torch.Tensor, y: int) -> torch.Tensor:
    """log p(y) after input embeddings x [pos, d]."""
    return torch.log_softmax(model.hf_model(inputs_embeds=x[None]).logits[0, -1].float(), -1)[y]


def _scratch(model, seq, j: int, ig_steps: int, base: torch.Tensor):
    """Gradient norm, input x gradient, IG from ``base`` [d] (specials kept in the baseline) and occlusion
    for target j, directly."""
    E = model.embed(seq.context(j)).detach()
    keep = ~seq.attributable[: len(E), None]
    B = torch.where(keep, E, base.expand_as(E))
    y = seq.target_id(j)

    def grad(x):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_logp(model, x, y), x)
        return g

    g = grad(E)
    alphas = [(k + 0.5) / ig_steps for k in range(ig_steps)]
    ig = sum(grad(B + a * (E - B)) for a in alphas) / ig_steps * (E - B)
    with torch.no_grad():
        p = _logp(model, E, y).exp()
        occ = torch.stack([p - _logp(model, E * (torch.arange(len(E)) != w)[:, None], y).exp() for w in range(len(E))])
    return {"gradient_norm": g.norm(dim=-1), "input_x_gradient": (g * E).sum(-1), "integrated_gradients": ig.sum(-1),
            "occlusion": occ}


@pytest.mark.parametrize("bos, ig_baseline", [(None, "zero"), (False, "zero"), (None, "unk")])
def test_gradient_and_occlusion_baselines_match_a_direct_computation(tiny_llama, bos, ig_baseline):
    seq = prepare(tiny_llama, "The cat sat on", target="xy", prepend_bos=bos)
    params = baselines.BaselineParams(ig_steps=8, ig_baseline=ig_baseline)
    ours = {m: baselines.baseline_importance(tiny_llama, seq, m, params) for m in (*baselines.GRADIENT_METHODS, "occlusion")}
    pad = tiny_llama.embed(torch.tensor([tiny_llama.tokenizer.pad_token_id]))[0].detach()  # no UNK: the pad token
    base = pad if ig_baseline == "unk" else torch.zeros_like(pad)
    for j in range(seq.n_targets):
        ref = _scratch(tiny_llama, seq, j, ig_steps=8, base=base)
        attr = seq.attributable[: seq.n_prompt + j].cpu()
        for method, values in ours.items():
            row = values[j, : seq.n_prompt + j]
            assert torch.isnan(row[~attr]).all()
            torch.testing.assert_close(row[attr], ref[method][attr].float().cpu(), rtol=1e-4, atol=1e-5, msg=method)


@pytest.mark.parametrize("ig_baseline", ["zero", "unk"])
def test_integrated_gradients_completeness_with_bos(tiny_llama, ig_baseline):
    # sum over tokens = log p(y | x) - log p(y | baseline), baseline = zero (or UNK) embeddings except BOS
    seq = prepare(tiny_llama, "The cat sat on", target="x")
    ig = baselines.integrated_gradients(tiny_llama, seq, baselines.BaselineParams(ig_steps=256, ig_baseline=ig_baseline))
    E = tiny_llama.embed(seq.context(0)).detach()
    b = baselines.baseline_embedding(tiny_llama, ig_baseline)
    base = torch.where(seq.attributable[: len(E), None], b.expand_as(E), E)
    with torch.no_grad():
        delta = _logp(tiny_llama, E, seq.target_id(0)) - _logp(tiny_llama, base, seq.target_id(0))
    assert not seq.attributable[0]  # the BOS is there and stays in the baseline
    with pytest.raises(wb.InputError, match="ig_baseline"):
        baselines.integrated_gradients(tiny_llama, seq, baselines.BaselineParams(ig_baseline="mean"))
    assert torch.nansum(ig[0]).item() == pytest.approx(delta.item(), rel=1e-3, abs=1e-4)


def test_rollout_of_a_hand_built_attention_stack():
    first = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 0, 0]])  # every query reads token 0
    causal_mean = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    out = baselines.rollout(torch.stack([first, causal_mean]))
    # layer 1: 0.5 A + 0.5 I = [[1,0,0],[.5,.5,0],[.5,0,.5]]; layer 2 on the left: [[1,0,0],[.25,.75,0],[1/6,1/6,2/3]]
    expected = torch.tensor([[1.0, 0, 0], [0.625, 0.375, 0], [7 / 12, 1 / 12, 1 / 3]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(baselines.rollout(torch.eye(3)[None].repeat(4, 1, 1)), torch.eye(3, dtype=torch.float64))


def _random_gpt2(folder):
    """A random 3-layer GPT-2 on the byte vocabulary, saved so that an untouched HF copy can be loaded too."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.models.tiny import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, byte_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=BOS_ID,
                        eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    byte_tokenizer(folder / "_tok").save_pretrained(folder)
    return folder


def test_attention_baselines_match_hf_attentions(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = _random_gpt2(tmp_path / "gpt2")
    model = wb.load_model(str(folder), progress=False)
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
    seq = prepare(model, "The cat sat on", target="x")
    with torch.no_grad():
        att = hf(seq.context(0)[None].cpu(), output_attentions=True).attentions
    heads = torch.stack([a[0].float().mean(0) for a in att])  # [layer, q, k]
    last, attr = seq.n_prompt - 1, seq.attributable[: seq.n_prompt].cpu()
    for ours, ref in ((baselines.attention_last, heads[-1, last]), (baselines.attention_mean, heads.mean(0)[last]),
                      (baselines.attention_rollout, baselines.rollout(heads)[last].float())):
        row = ours(model, seq)[0]
        assert torch.isnan(row[~attr]).all()
        torch.testing.assert_close(row[attr], ref[attr], rtol=1e-5, atol=1e-6)


def test_occlusion_is_a_probability_drop_that_saturates(copy_model):
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=1)
    occ = baselines.occlusion(copy_model, seq)[0]
    p = target_probabilities(copy_model, seq)[0].item()
    assert occ.nan_to_num(-1.0).max().item() <= p + 1e-6  # a drop in probability never exceeds p(target)
    assert occ[COPY_POSITION].item() == pytest.approx(p, abs=0.02)  # removing the copied token: nearly all of it


# ------------------------------------------------------------------ retention-controlled faithfulness
@pytest.mark.parametrize("pi", [0.1, 0.3, 0.5, 0.9])
def test_retention_probabilities(pi):
    attr = torch.tensor([False, True, True, True, True, True])
    for imp in ([0, 0.4, 0.3, 0.2, 0.1, 0.0], [0, 1.0, 0, 0, 0, 0], [0, 0.2, 0.2, 0.2, 0.2, 0.2], [0, 0.9, 0.1, 0, 0, 0.0]):
        q = retention_probabilities(torch.tensor(imp, dtype=torch.float), attr, pi)
        assert q[0] == 1.0  # specials are always kept
        assert q[1:].mean().item() == pytest.approx(pi, abs=1e-6)
        assert (q >= 0).all() and (q <= 1 + 1e-6).all()
        v = torch.tensor(imp[1:], dtype=torch.float)
        assert (torch.diff(q[1:][v.argsort(descending=True, stable=True)]) <= 1e-6).all()  # order kept
    prop = retention_probabilities(torch.tensor([0, 0.4, 0.3, 0.2, 0.1, 0.0]), attr, 0.1)
    torch.testing.assert_close(prop[1:], torch.tensor([0.2, 0.15, 0.1, 0.05, 0.0]))  # proportional: nothing capped
    onehot = retention_probabilities(torch.tensor([0, 1.0, 0, 0, 0, 0]), attr, 0.6)
    torch.testing.assert_close(onehot[1:], torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5]))  # leftover shared uniformly


def test_retention_controlled_metrics_separate_perfect_from_random(copy_model):
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=2)
    W = len(seq.ids) - 1
    perfect = torch.zeros(seq.n_targets, W)
    perfect[:, COPY_POSITION] = 1.0
    wrong = torch.ones(seq.n_targets, W)
    wrong[:, COPY_POSITION] = 0.0
    summary = summarise(faithfulness(copy_model, seq, {"perfect": perfect, "wrong": wrong})).set_index(["method", "metric"])
    # at 80-95% retention a random mask mostly keeps the copied token (sufficiency: a smaller gap) but
    # rarely removes it, while the perfect one's removal budget goes to it first (comprehensiveness)
    for metric, gap in (("pi_soft_ns", 0.15), ("pi_soft_nc", 0.5)):
        assert summary.loc[("perfect", metric), "mean"] > 0.95  # the copied token alone suffices; without it, nothing
        assert summary.loc[("perfect", metric), "mean"] - summary.loc[("random", metric), "mean"] > gap
        assert summary.loc[("wrong", metric), "mean"] < 0.05
    assert summary.loc[("perfect", "pi_soft_nc"), "log_ratio"] > 1.0
    assert {"soft_ns", "soft_nc"} <= {m for _, m in summary.index}  # the old metrics stay
    with pytest.raises(wb.InputError, match="retention"):
        faithfulness(copy_model, seq, {}, FaithfulnessParams(retention=(1.0,)))
    assert "pi_soft_ns" not in set(faithfulness(copy_model, seq, {}, FaithfulnessParams(retention=()))["metric"])
    assert math.isfinite(summary.loc[("random", "pi_soft_nc"), "mean"])
