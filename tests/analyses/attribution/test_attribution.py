"""Attribution maths on a planted copy model (the target depends on exactly one known token)."""

from __future__ import annotations

import math

import warnings

import pytest
import torch

import workbench as wb
from support.attribution_planted import COPY_POSITION, build_copy_model
from workbench.analyses.attribution import baselines
from workbench.analyses.attribution.agreement import agreement, ranks_first, spearman, top_overlap
from workbench.analyses.attribution.common import prepare
from workbench.analyses.attribution.prompts import copy_tasks
from workbench.analyses.attribution.faithfulness import FaithfulnessParams, distance, faithfulness, kl, normalise, summarise
from workbench.analyses.attribution.reagent import (
    MIN_REPLACED, READINGS, ReagentParams, draw_key, probe_dtype, reagent_target, reagent_target_stepwise,
)
from workbench.analyses.attribution.replacers import build_sampler, candidate_ids, special_ids

PROMPT = "The quick brown fox jumps over"  # position 2 (after BOS) is 'h': the model predicts 'h'
FAST = dict(cache=False, max_new_tokens=2, keep_top_n=3, max_steps=300)


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    folder = build_copy_model(tmp_path_factory.mktemp("planted") / "copy")
    return wb.load_model(str(folder), progress=False)


def test_planted_model_copies_the_known_token(copy_model):
    for prompt in (PROMPT, "xyzzy plugh", "0123456789abcdef"):
        ids = copy_model.to_tokens(prompt)
        probs = torch.softmax(copy_model(ids)[0, -1], -1)
        assert int(probs.argmax()) == int(ids[0, COPY_POSITION]) and probs.max() > 0.8


@pytest.mark.parametrize("reading", READINGS)
def test_reagent_puts_the_copied_token_first(copy_model, reading):
    result = wb.reagent(copy_model, prompt=PROMPT, reading=reading, **FAST)
    targets = result.tables["targets"]
    assert list(targets["target"]) == ["h", "h"]
    assert (targets["top_context_position"] == COPY_POSITION).all()
    for j in range(2):
        imp = result.importance(j)
        assert math.isnan(imp[0])  # BOS is never attributed
        if reading == "softmax":
            assert torch.nansum(imp).item() == pytest.approx(1.0, abs=1e-5)  # softmax over attributable tokens
        else:  # every position replaced often enough for its mean gain
            assert (result.tensors["replaced_count"][j, 1:len(imp)] >= MIN_REPLACED).all()
        others = torch.cat([imp[1:COPY_POSITION], imp[COPY_POSITION + 1:]])
        assert imp[COPY_POSITION] > 2 * others.max()
    for j, n in enumerate(result.probe_count.tolist()):  # every probe found the copied token
        assert result.probe_stopped[j, :n].all()


@pytest.mark.parametrize("method", baselines.BASELINES)
def test_baselines_put_the_copied_token_first(copy_model, method):
    result = wb.attribute(copy_model, prompt=PROMPT, method=method, cache=False, max_new_tokens=2)
    for j in range(2):
        imp = torch.nan_to_num(result.importance(j).abs(), nan=-1)
        if method == "attention_rollout":  # rollout's identity term always gives the query position >= 1/2
            assert imp[-1] >= 0.5
            imp = imp[:-1]
        ranked = imp.sort(descending=True).values
        assert int(imp.argmax()) == COPY_POSITION and ranked[0] > 1.5 * ranked[1], method


def test_integrated_gradients_completeness(copy_model):
    # sum of IG attributions ~ log p(target | x) - log p(target | zero embeddings), BOS kept
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=1)
    ig = baselines.integrated_gradients(copy_model, seq, baselines.BaselineParams(ig_steps=128, ig_baseline="zero"))
    E = copy_model.hf_model.get_input_embeddings()(seq.ids[:-1])
    zero = torch.where(seq.attributable[:-1, None], torch.zeros_like(E), E)
    with torch.no_grad():
        lp = [torch.log_softmax(copy_model.hf_model(inputs_embeds=x[None]).logits[0, -1], -1)[seq.target_id(0)]
              for x in (E, zero)]
    assert torch.nansum(ig[0]).item() == pytest.approx((lp[0] - lp[1]).item(), rel=0.02, abs=0.02)


@pytest.mark.parametrize("s0_metric, margin, formula", [("hellinger", 0.5, "hellinger"), ("kl", 0.05, "hellinger"),
                                                        ("hellinger", 0.5, "authors")])  # "kl" compresses Soft-NS
def test_faithfulness_of_the_perfect_attribution_beats_random(copy_model, s0_metric, margin, formula):
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=2)
    W = len(seq.ids) - 1
    perfect = torch.zeros(seq.n_targets, W)
    perfect[:, COPY_POSITION] = 1.0
    wrong = torch.ones(seq.n_targets, W)  # everything but the copied token
    wrong[:, COPY_POSITION] = 0.0
    table = faithfulness(copy_model, seq, {"perfect": perfect, "wrong": wrong}, FaithfulnessParams(s0_metric=s0_metric,
                                                                                             soft_formula=formula))
    summary = summarise(table).set_index(["method", "metric"])
    for metric in ("soft_ns", "soft_nc"):
        assert summary.loc[("perfect", metric), "log_ratio"] > margin
        assert summary.loc[("perfect", metric), "mean"] > summary.loc[("wrong", metric), "mean"]
    # hard metrics: removing the copied token destroys the prediction, keeping it alone suffices
    assert summary.loc[("perfect", "comp_aopc"), "mean"] > 0.75
    assert summary.loc[("perfect", "suff_aopc"), "mean"] < 0.05
    assert summary.loc[("wrong", "comp_aopc"), "mean"] < 0.05


def test_distance_kl_and_normalise(tiny_llama):
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.0, 0.0, 1.0])
    assert kl(p, p).item() == pytest.approx(0.0)
    assert kl(p, torch.tensor([0.25, 0.25, 0.5])).item() == pytest.approx(math.log(2.0))
    with pytest.raises(wb.InputError, match="s0_metric"):
        faithfulness(tiny_llama, prepare(tiny_llama, "hello", max_new_tokens=1), {}, FaithfulnessParams(s0_metric="js"))
    assert distance(p, p).item() == pytest.approx(0.0)
    assert distance(p, q).item() == pytest.approx(1.0)  # disjoint supports: the largest Hellinger distance
    r = torch.tensor([0.25, 0.25, 0.5])
    expected = math.sqrt((math.sqrt(0.5) - 0.5) ** 2 * 2 + 0.5) / math.sqrt(2)
    assert distance(p, r).item() == pytest.approx(expected)
    attr = torch.tensor([False, True, True, True])
    out = normalise(torch.tensor([float("nan"), 2.0, -4.0, 2.0]), attr)
    assert out.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.25])
    assert normalise(torch.zeros(4), attr).tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3])


def test_compare_attributions_is_tidy_and_reagent_beats_random(copy_model):
    result = wb.compare_attributions(copy_model, prompts=[PROMPT, "abcdefgh ijkl"],
                                     methods=["reagent", "occlusion", "attention_last"],
                                     cache=False, max_new_tokens=1, keep_top_n=3, max_steps=200)
    table = result.to_frame()
    assert list(table.columns[:6]) == ["method", "prompt", "prompt_index", "target_index", "target", "metric"]
    assert set(table["method"]) == {"random", "reagent", "occlusion", "attention_last"}
    assert len(table) == len(table.drop_duplicates(["method", "prompt_index", "target_index", "metric"]))
    summary = result.tables["summary"].set_index(["method", "metric"])
    for method in ("reagent", "occlusion"):
        assert summary.loc[(method, "soft_nc"), "log_ratio"] > 0
        assert summary.loc[(method, "soft_ns"), "log_ratio"] > 0
    assert set(result.wide()["method"]) == {"random", "reagent", "occlusion", "attention_last"}


def test_same_seed_same_result_other_seed_differs(copy_model):
    a = wb.reagent(copy_model, prompt=PROMPT, seed=3, **FAST)
    b = wb.reagent(copy_model, prompt=PROMPT, seed=3, **FAST)
    c = wb.reagent(copy_model, prompt=PROMPT, seed=4, **FAST)
    assert torch.equal(a.tensors["probe_importance"].nan_to_num(), b.tensors["probe_importance"].nan_to_num())
    assert torch.equal(a.tensors["probe_steps"], b.tensors["probe_steps"])
    assert not torch.equal(a.tensors["probe_importance"].nan_to_num(), c.tensors["probe_importance"].nan_to_num())


@pytest.mark.parametrize("replacer", ["uniform", "predictions"])
def test_batched_run_equals_the_step_by_step_loop(copy_model, replacer):
    """Counter-based draws: the chunked, speculative run is the reference loop, number for number, over seeds,
    chunk sizes and probes that stop at different steps (keep_top_n=2: most probes need several steps)."""
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=1)
    ctx, target, attr = seq.context(0), seq.target_id(0), seq.attributable[: seq.n_prompt]
    sampler = build_sampler(copy_model, seq.ids[:-1], replacer)
    stopped_at = set()
    for seed in range(4):
        params = ReagentParams(n_probes=6, keep_top_n=2, max_steps=40, replacer=replacer, probe_dtype=None)
        ref = reagent_target_stepwise(copy_model, ctx, target, attr, sampler, params, draw_key(seed, 0))
        for chunk_tokens in (1, 7, 100_000):
            p = ReagentParams(**{**params.__dict__, "chunk_tokens": chunk_tokens})
            out = reagent_target(copy_model, ctx, target, attr, sampler, p, draw_key(seed, 0))
            assert torch.equal(out["steps"], ref["steps"]) and torch.equal(out["stopped"], ref["stopped"])
            torch.testing.assert_close(out["probe_importance"], ref["probe_importance"], rtol=1e-5, atol=1e-6)
            assert torch.equal(out["step_replaced"], ref["step_replaced"])  # the mu reading's steps, the same ones
            torch.testing.assert_close(out["step_gain"], ref["step_gain"], rtol=1e-5, atol=1e-6)
        stopped_at |= set(ref["steps"].tolist())
    assert len(stopped_at) > 3  # probes stopped at many different steps: speculation was exercised


def test_max_steps_caps_probes_and_flags_them(copy_model):
    # top-1 of 1 kept token and k=1: the check can only pass once the copied token ranks first
    out = wb.reagent(copy_model, prompt=PROMPT, cache=False, max_new_tokens=1, keep_top_n=1, stop_top_k=1, max_steps=2,
                     n_probes=8)
    steps = out.tensors["probe_steps"]
    assert steps.max() <= 2
    assert (steps[~out.tensors["probe_stopped"]] == 2).all()


def test_given_target_text_is_attributed_token_by_token(copy_model):
    out = wb.reagent(copy_model, prompt=PROMPT, target="hx", cache=False, keep_top_n=3, max_steps=100)
    assert list(out.tables["targets"]["target"]) == ["h", "x"]
    assert out.meta["generated"] is False
    assert out.tables["targets"]["probability"][0] > 0.8


def test_replacers_exclude_specials_and_the_original(copy_model):
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=1)
    gen = torch.Generator().manual_seed(0)
    specials = set(special_ids(copy_model.tokenizer))
    assert specials.isdisjoint(candidate_ids(copy_model).tolist())
    uniform = build_sampler(copy_model, seq.ids, "uniform").draw(500, len(seq.ids), gen)
    assert specials.isdisjoint(uniform.unique().tolist()) and len(uniform.unique()) > 200
    pred = build_sampler(copy_model, seq.ids, "predictions").draw(300, len(seq.ids), gen)
    assert specials.isdisjoint(pred.unique().tolist())
    assert not (pred == seq.ids.cpu()[None]).any()  # a replacement always changes the token
    # at positions after the copied token the model predicts it: its predictions replacer favours it
    after = pred[:, COPY_POSITION + 1:]
    assert (after == seq.ids[COPY_POSITION].item()).float().mean() > 0.5


def _tiny_mlm(folder, vocab_tokenizer=None):
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    from workbench.models.tiny import VOCAB_SIZE, byte_tokenizer

    if vocab_tokenizer is None:
        tok = byte_tokenizer(folder / "_tok")
        tok.add_special_tokens({"mask_token": "<mask>"})  # id VOCAB_SIZE, after the shared vocabulary
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "b": 1, "[MASK]": 2}, unk_token="a")),
                                      mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB_SIZE + 1, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_masked_lm_replacer(copy_model, tmp_path):
    folder = _tiny_mlm(tmp_path / "mlm")
    out = wb.reagent(copy_model, prompt=PROMPT, cache=False, max_new_tokens=1, keep_top_n=3, max_steps=300,
                     replacer="mlm", mlm_path=str(folder))
    assert int(torch.nan_to_num(out.importance(0), nan=-1).argmax()) == COPY_POSITION
    mlm = wb.MaskedLM.from_folder(folder)
    seq = prepare(copy_model, PROMPT, None, max_new_tokens=1)
    draws = mlm.sampler(copy_model, seq.ids, candidate_ids(copy_model)).draw(200, len(seq.ids), torch.Generator())
    assert not (draws == seq.ids.cpu()[None]).any() and draws.max() < copy_model.facts.d_vocab
    again = wb.reagent(copy_model, prompt=PROMPT, cache=False, max_new_tokens=1, keep_top_n=3, max_steps=300, mlm=mlm)
    assert torch.equal(again.tensors["probe_steps"], out.tensors["probe_steps"])  # same seed, same draws


def test_masked_lm_with_another_vocabulary_is_refused(copy_model, tmp_path):
    folder = _tiny_mlm(tmp_path / "other", vocab_tokenizer="word-level")
    with pytest.raises(wb.InputError, match="vocabulary"):
        wb.reagent(copy_model, prompt=PROMPT, cache=False, replacer="mlm", mlm_path=str(folder), max_steps=5)
    with pytest.raises(wb.InputError, match="mlm"):
        wb.reagent(copy_model, prompt=PROMPT, cache=False, replacer="mlm", max_steps=5)


@pytest.mark.parametrize("method", ["reagent", "integrated_gradients", "occlusion", "attention_rollout"])
def test_clear_errors(copy_model, method):
    with pytest.raises(wb.InputError, match="empty"):
        wb.attribute(copy_model, prompt="", method=method, cache=False)
    with pytest.raises(wb.InputError, match="empty"):
        wb.attribute(copy_model, prompt="   ", method=method, cache=False)
    with pytest.raises(wb.InputError, match="vocabulary"):
        wb.attribute(copy_model, prompt=PROMPT, method=method, target=10**6, cache=False)
    with pytest.raises(wb.InputError, match="vocabulary"):
        wb.attribute(copy_model, prompt=PROMPT, method=method, target=-1, cache=False)
    with pytest.raises(wb.InputError, match="context"):  # the planted model has 64 positions
        wb.attribute(copy_model, prompt="x" * 100, method=method, cache=False)
    with pytest.raises(wb.InputError, match="context"):  # prompt fits, prompt + generated tokens do not
        wb.attribute(copy_model, prompt="x" * 62, method=method, max_new_tokens=5, cache=False)


def test_target_text_outside_the_vocabulary(tiny_llama):
    from workbench.analyses.attribution.common import _target_ids

    class NoUnk:  # a tokenizer that maps unknown text to its unk id
        unk_token_id = 7

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7]}

    fake = type("M", (), {"tokenizer": NoUnk(), "facts": tiny_llama.facts, "name": "fake"})()
    with pytest.raises(wb.InputError, match="not in fake's vocabulary"):
        _target_ids(fake, "¤")


def test_bad_options(copy_model):
    with pytest.raises(wb.InputError, match="replacing_ratio"):
        wb.reagent(copy_model, prompt=PROMPT, cache=False, replacing_ratio=0.0)
    with pytest.raises(wb.InputError, match="replacer"):
        wb.reagent(copy_model, prompt=PROMPT, cache=False, replacer="roberta")
    with pytest.raises(wb.InputError, match="method"):
        wb.attribute(copy_model, prompt=PROMPT, method="lime", cache=False)
    with pytest.raises(wb.InputError, match="method"):
        wb.compare_attributions(copy_model, prompts=[PROMPT], methods=["lime"], cache=False)


@pytest.mark.parametrize("dtype", ["bfloat16", None, "auto"])
def test_every_probe_precision_finds_the_same_token(copy_model, dtype):
    out = wb.reagent(copy_model, prompt=PROMPT, probe_dtype=dtype, **FAST)
    assert (out.tables["targets"]["top_context_position"] == COPY_POSITION).all()
    resolved = probe_dtype(copy_model, ReagentParams(probe_dtype=dtype))
    assert out.meta["probe_dtype"] == (resolved or "float32")
    assert resolved in ((dtype,) if dtype != "auto" else ("bfloat16", None))


def test_auto_precision_leaves_half_precision_models_alone():
    half = wb.load_model("tiny-llama", dtype="bfloat16", progress=False)
    assert probe_dtype(half, ReagentParams()) is None  # "auto" by default
    with pytest.raises(wb.InputError, match="probe_dtype"):
        wb.reagent(half, prompt=PROMPT, probe_dtype="int8", **FAST)


def test_targets_as_numpy_ints_tensors_and_special_token_text(tiny_llama):
    import numpy as np

    from workbench.models.tiny import EOS_ID

    small = dict(max_steps=5, n_probes=2, cache=False)
    by_id = wb.reagent(tiny_llama, prompt="The cat sat", target=ord("x"), **small)
    for target in (np.int64(ord("x")), torch.tensor(ord("x"))):
        again = wb.reagent(tiny_llama, prompt="The cat sat", target=target, **small)
        assert again.config.target == ord("x")
        torch.testing.assert_close(again.tensors["importance"], by_id.tensors["importance"], equal_nan=True)
    assert wb.reagent(tiny_llama, prompt="The cat sat", target="<eos>", **small).config.target == "<eos>"
    assert wb.reagent(tiny_llama, prompt="The cat sat", target=np.int64(EOS_ID), **small).config.target == EOS_ID


def test_a_long_run_is_announced_before_it_starts(tiny_llama):
    import importlib

    from workbench.analyses.attribution.common import prepare

    module = importlib.import_module("workbench.analyses.attribution.reagent")

    seq = prepare(tiny_llama, "word " * 48, target="x")  # 241 tokens: near the tiny model's context
    config = module.ReagentConfig(prompt="p", n_probes=16, max_steps=3000, adaptive=False)  # Inseq's: 1.2e7 positions
    with pytest.warns(UserWarning, match="can take hours"):
        work = module.warn_if_costly(tiny_llama, seq, config)
    assert work == 16 * 3000 * seq.n_prompt
    with pytest.warns(UserWarning, match="256 probes"):  # adaptive: the worst case is max_probes
        config = module.ReagentConfig(prompt="p", adaptive=True)
        assert module.warn_if_costly(tiny_llama, seq, config) == 256 * 500 * seq.n_prompt
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.warn_if_costly(tiny_llama, prepare(tiny_llama, "short", target="x"), module.ReagentConfig(prompt="p"))


def test_agreement_statistics_on_known_rankings():
    a = torch.tensor([0.1, 0.5, float("nan"), 0.3, 0.05])
    assert agreement(a, a) == {"spearman": pytest.approx(1.0), "top1": 1.0, "top3": 1.0}
    rev = -a
    assert spearman(a, rev) == pytest.approx(-1.0)
    assert top_overlap(a, torch.tensor([0.4, 0.0, 9.0, 0.3, 0.2]), 3) == pytest.approx(2 / 3)  # NaN position never counts
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9487, abs=1e-4)
    assert ranks_first(a, 1) and not ranks_first(a, 3)
    assert not ranks_first(torch.tensor([0.5, 0.5, 0.1]), 0)  # a tie is not a first place


@pytest.mark.real
def test_copy_tasks_plant_a_single_token_word(embedded):
    tasks = copy_tasks(embedded, 20, seed=3)
    assert len({t.word for t in tasks}) == 20 and tasks == copy_tasks(embedded, 20, seed=3)
    for t in tasks:
        ids = embedded.to_tokens(t.prompt, prepend_bos=False)[0].tolist()
        word = embedded.to_tokens(t.word, prepend_bos=False)[0].tolist()
        assert len(word) == 1 and ids[t.answer_position] == word[0] and ids.count(word[0]) == 1
