"""Every architecture family: identities that make the analyses right, and every analysis either
verified or refused with a reason.

Tiny random models of 21 Hugging Face families (tests/support/families.py) are saved with a tokenizer
and loaded through ``wb.load_model(folder)``, the path a researcher's own checkpoint takes. The
identities are checked against the model's own forward pass (hooks), never against our formulas
alone: logits equal HF eager; the sublayer writes sum to what the block adds to the residual; the
per-head writes sum to the attention's write; the effective (norm-folded) matrices reproduce the
measured queries and writes; whole-head composition equals the formula on those matrices.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import workbench as wb
from support.families import FAMILIES, UNVERIFIED, analysis_runs, build_family, outcome, readme_table, save_family
from workbench.analyses.heads.scores import dense_score
from workbench.analyses.super_weights.trace import channel_contributions, mlp_input_names, residual_parts
from workbench.models import hook_names as hn

from support.families import PROMPT

ALL = sorted(FAMILIES)
_loaded: dict[str, wb.HookedModel] = {}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def family_model(family: str, folders) -> wb.HookedModel:
    """The family's tiny model, loaded once per test module through the folder path."""
    if family not in _loaded:
        folder = folders / family
        if not (folder / "config.json").exists():
            save_family(family, folder)
        _loaded[family] = wb.load_model(folder, progress=False)
    return _loaded[family]


def capture(model, names, ids) -> dict[str, torch.Tensor]:
    store = {}

    def keep(name):
        def hook(t, hook):
            store[name] = t.detach().float()
        return hook

    with model.hooks([(n, keep(n)) for n in sorted(set(names))]), torch.no_grad():
        model(ids)
    assert set(names) <= set(store), f"hooks that never fired: {sorted(set(names) - set(store))}"
    return store


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("family", ALL)
def test_logits_equal_hf_eager(family, folders):
    model = family_model(family, folders)
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        reference = build_family(family)(ids).logits  # built from the same seed, no bridge
        assert (model(ids) - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("family", ALL)
def test_self_check_verifies_exactly_what_it_should(family, folders):
    """The load-time self-check (workbench/models/selfcheck.py) measures every identity the decompositions rely on
    on the model's own forward pass; every family's identities hold except the ones listed as unverified, whose
    analyses refuse."""
    model = family_model(family, folders)
    checks = model.facts.checks
    assert checks is not None
    failed = {name for name, found in checks.identities.items() if not found.passed}
    assert failed == UNVERIFIED.get(family, set()), {n: checks.identities[n].describe() for n in failed}
    for name, found in checks.identities.items():
        if found.passed and name not in ("causal", "logits", "uniform_attention"):
            assert found.layers, name  # checked on at least one layer


def _broken(model, **facts):
    """The model with wrong facts, as a table that guessed them would give."""
    from dataclasses import replace

    from workbench.models.selfcheck import run_self_check

    good = model.facts
    attention = facts.pop("attention", {})
    model.facts = replace(good, **facts, attention=replace(good.attention, **attention))
    try:
        return run_self_check(model)
    finally:
        model.facts = good


@pytest.mark.parametrize("family, facts, identity", [
    ("gemma3", dict(gain_offset=0.0), "qkv"),  # the Gemma 3 4B+ failure: 1 + w gains read as w
    ("qwen3", dict(attention=dict(qk_norm=None)), "qkv"),  # q/k norms left out
    ("olmo2", dict(attention=dict(qk_norm="head")), "qkv"),  # a full-width q/k norm read as per head
    ("llama", dict(norm="layernorm"), "qkv"),  # an RMS norm read as a LayerNorm
    ("cohere", dict(attention=dict(qk_norm_centred=False)), "qkv"),  # Cohere's LayerNorm q/k norms read as RMS
    ("gemma2", dict(post_norms=False), "head_writes"),  # sandwich norms read as pre-norms only
    ("granite", dict(residual_multiplier=1.0), "attn_write"),  # a residual multiplier ignored
    ("phi", dict(parallel_blocks=False, shared_input_norm=False), "mlp_read"),  # a parallel block read as sequential
    ("gemma", dict(gain_offset=0.0), "mlp_read"),  # the MLP's norm: 1 + w read as w
    ("bloom", dict(act_fn="relu"), "mlp_in"),  # a wrong activation (BLOOM's config names none)
])
def test_self_check_notices_a_wrong_fact(family, facts, identity, folders):
    """Negative controls: each fact a table could get wrong makes the identity that depends on it fail, and an
    analysis that needs it refuses, naming the identity and the error."""
    model = family_model(family, folders)
    found = _broken(model, **facts).identities[identity]
    assert not found.passed, found.describe()  # failed by far, or (a hook the wrong layout needs) not checkable
    assert found.error is None or found.error > 100 * found.tolerance, found.describe()


@pytest.mark.parametrize("dropped", ["b_router", "b_out", "swiglu_limit"])
def test_self_check_notices_misread_experts(dropped, folders, monkeypatch):
    """GPT-OSS's experts read without their router bias, output bias or clamped SwiGLU: the experts' writes no
    longer sum to the measured MoE write."""
    from dataclasses import replace

    from workbench.models import weights as W
    from workbench.models.selfcheck import run_self_check

    model = family_model("gpt_oss", folders)
    assert run_self_check(model).identities["experts"].passed
    read = W._gpt_oss_experts
    monkeypatch.setattr(W, "_gpt_oss_experts", lambda *args: replace(read(*args), **{dropped: None}))
    found = run_self_check(model).identities["experts"]
    assert not found.passed and found.error is not None and found.error > 100 * found.tolerance, found.describe()


def test_an_analysis_refuses_on_a_failed_identity(folders):
    from dataclasses import replace

    model = family_model("gemma3", folders)
    good = model.facts
    model.facts = replace(good, gain_offset=0.0)
    try:
        model.facts = replace(model.facts, checks=_broken(model))
        with pytest.raises(wb.UnsupportedModelError, match="effective W_Q, W_K, W_V reproduce.*which failed on .*error"):
            wb.head_composition(model, null_samples=8, cache=False)
        assert isinstance(wb.reagent(model, prompt=PROMPT, max_steps=2, cache=False), wb.Result)  # needs logits only
    finally:
        model.facts = good


@pytest.mark.parametrize("family", ALL)
def test_whole_head_composition_is_the_formula_on_effective_matrices(family, folders):
    model = family_model(family, folders)
    if {"qkv", "attn_write", "values_mixed", "uniform_heads"} & UNVERIFIED.get(family, set()):
        pytest.skip("head composition refuses on this family (its identities are unverified)")
    result = wb.head_composition(model, null_samples=8, cache=False)
    n = model.facts.n_kv_heads
    first, second = model.facts.attention_layers[:2]  # a hybrid's first two attention layers
    assert result.writer_layers[:2] == [first, second]
    writer = model.effective_attention_weights(first).expanded()
    reader = model.effective_attention_weights(second).expanded()
    for wh, rh in ((0, 0), (1, model.facts.n_heads - 1)):
        ov = writer.W_V[wh].double() @ writer.W_O[wh].double()
        qk = reader.W_Q[rh].double() @ reader.W_K[rh].double().T
        expected = {"Q": dense_score(ov, qk), "K": dense_score(ov, qk.T),
                    "V": dense_score(ov, reader.W_V[rh].double() @ reader.W_O[rh].double())}
        for kind, value in expected.items():
            got = float(result.tensors[f"head/{kind}"][0, wh, 1, rh])
            assert got == pytest.approx(float(value), rel=1e-4), (kind, wh, rh, n)


def test_head_composition_runs_over_a_hybrids_attention_layers(folders):
    """LFM2 with convolution layers between its attention layers: composition scores the attention layers' heads,
    says which layers it skipped and why, and draws its rotated null from attention heads only; what stacks every
    layer's heads refuses, naming the convolution layers."""
    from workbench.analyses.heads.scores import rotated_null_scores
    from workbench.analyses.heads.svd import head_weights

    model = family_model("lfm2", folders)
    assert [f.kind for f in model.facts.layers] == ["convolution", "full", "convolution", "full"]
    result = wb.head_composition(model, null_samples=8, cache=False)
    assert result.writer_layers == result.reader_layers == [1, 3]
    assert result.skipped_layers == {0: "convolution: no attention heads", 2: "convolution: no attention heads"}
    assert ("layers skipped", "0,2 (convolution: no attention heads)") in result.summary()
    sv = result.singular_values("OV")
    assert sv[[0, 2]].isnan().all() and not sv[[1, 3]].isnan().any()
    w = model.effective_attention_weights(3).expanded()
    dense = torch.linalg.svdvals(w.W_V[2].double() @ w.W_O[2].double())[: sv.shape[-1]]
    torch.testing.assert_close(sv[3, 2].double(), dense, rtol=1e-4, atol=1e-6)
    stacked = rotated_null_scores(head_weights(model, (1, 3)), ("Q", "K", "V"), 8, seed=1)  # the attention layers'
    for kind in "QKV":
        torch.testing.assert_close(result.null_scores(kind, rotated=True), stacked[kind].head.reshape(-1).float())
    with pytest.raises(wb.InputError, match=r"no attention heads to compose in layers 0 \(convolution\)"):
        wb.head_composition(model, writer_layers=(0,), cache=False)
    with pytest.raises(wb.UnsupportedModelError, match="layers 0,2 are convolution"):
        wb.laundry_list(model, cache=False)


@pytest.mark.parametrize("family", ALL)
def test_trace_parts_sum_to_the_mlp_input_and_its_pre_activation(family, folders):
    model = family_model(family, folders)
    if model.facts.layers[-1].mlp == "moe" or UNVERIFIED.get(family):
        pytest.skip("the dense trace needs a dense last layer and every identity verified")
    ids = model.to_tokens(PROMPT)
    layer = model.facts.n_layers - 1
    stream = hn.resid_pre(layer) if model.facts.parallel_blocks else hn.resid_mid(layer)
    acts = capture(model, [*mlp_input_names(model, layer), stream, hn.mlp_pre(layer)], ids)
    for pos in (0, ids.shape[1] - 1):
        labels, parts = residual_parts(model, acts, layer, pos)
        assert len(labels) == parts.shape[0]
        assert rel(parts.sum(0), acts[stream][0, pos]) < 1e-5
        contrib = channel_contributions(model, parts, layer, 5)
        key = "gate" if "gate" in contrib else "up"
        total = contrib[key].sum() + contrib[f"{key}_const"]
        assert float(total) == pytest.approx(float(acts[hn.mlp_pre(layer)][0, pos, 5]), rel=1e-3, abs=1e-4)


# ---------------------------------------------------------------- every analysis, verified or refused
OUTCOMES: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("family", ALL)
def test_every_analysis_is_verified_or_refused(family, folders):
    """No crash and no silent number: a Result whose identities hold, or an UnsupportedModelError that says
    what to run instead. The identities each result carries are checked here too."""
    model = family_model(family, folders)
    before = model.fingerprint()
    for name, run in analysis_runs(model).items():
        text, result = outcome(run)
        OUTCOMES[(family, name)] = text
        if result is None:
            assert any(w in text for w in ("instead", "use ", "try ")), text  # says what to run instead
            continue
        assert isinstance(result, wb.Result)
        if name == "super-weight trace":
            assert result.meta["decomposition_error"] < 1e-3
        if name == "super experts":
            assert result.meta["decomposition_error"] < 1e-4
    assert model.fingerprint() == before  # every edit undone


def test_readme_table_is_the_matrix():
    """README's families x analyses table is what the matrix above found (``python docs/families.py`` writes it)."""
    if len(OUTCOMES) < len(ALL) * len(analysis_runs(None)):
        pytest.skip("the whole matrix did not run in this session")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert readme_table(OUTCOMES) in readme, "README's table is stale: run python docs/families.py"


# ---------------------------------------------------------------- planted ground truth on each block kind
PLANTED = ["llama", "phi", "gemma2"]  # sequential pre-norm, parallel, sandwich norms


@pytest.mark.parametrize("family", PLANTED)
def test_planted_super_weight_is_found(family, folders):
    family_model(family, folders)  # writes the folder
    model = wb.load_model(folders / family, progress=False)  # a private copy: it gets edited
    layer, row, col = 0, 11, 7
    mlp = model.mlp_weights(layer)
    with torch.no_grad():
        mlp.W_in[:, col] *= 40.0  # a massive hidden activation in channel col ...
        mlp.W_out[col, row] = 25.0  # ... written into residual channel row by one weight
        if model.facts.post_norms:  # the output norm would cap the spike: its gain makes it (as in Gemma 3)
            model.norm_weight(layer, "mlp", post=True)[row] = 300.0
    result = wb.super_weights(model, eval_windows=2, window=32, cache=False)
    assert (layer, row, col) in result.coordinates()
    assert result.meta["massive"]["channel"] == row


@pytest.mark.parametrize("family", PLANTED)
def test_planted_composition_is_found(family, folders):
    """Writer L0H0 writes along e_3; reader L1H2's queries read e_3: Q-composition 1, through every fold."""
    family_model(family, folders)
    model = wb.load_model(folders / family, progress=False)
    writer, reader = model.attention_weights(0), model.attention_weights(1)
    p = torch.zeros(model.facts.d_model)
    p[3] = 1.0
    kv = 0 // writer.heads_per_kv
    with torch.no_grad():
        writer.W_V[kv].zero_()
        writer.W_V[kv][:, 0] = torch.randn(model.facts.d_model, generator=torch.Generator().manual_seed(0))
        writer.W_O[0].zero_()
        writer.W_O[0][0] = p
        reader.W_Q[2].zero_()
        reader.W_Q[2][:, 0] = p
    result = wb.head_composition(model, kinds=("Q",), null_samples=16, cache=False)
    assert float(result.tensors["head/Q"][0, 0, 1, 2]) == pytest.approx(1.0, abs=1e-4)
    top = result.to_frame()
    assert (top.iloc[0].writer_layer, top.iloc[0].writer_head, top.iloc[0].reader_head) == (0, 0, 2)


def test_only_models_knows_architectures():
    """Analyses, views and the CLI ask HookedModel; they never import transformers or reach into its internals."""
    root = Path(__file__).parents[2] / "workbench"
    offenders = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] == "models":
            continue
        text = path.read_text()
        for needle in ("import transformers", "from transformers", "transformer_lens", ".hf_model", ".bridge"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert not offenders, offenders


def test_variants_the_bridge_cannot_decompose_are_refused(tmp_path):
    """BLOOM with the skip connection taken after the norm: its stream is not a sum of writes, so decompositions
    refuse (weight analyses still run); OPT with post-block LayerNorm: the bridge cannot run it, so loading says so."""
    import transformers

    from support.families import BOS, EOS, PAD, VOCAB
    from workbench.models.tiny import byte_tokenizer

    common = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    tokenizer = byte_tokenizer(tmp_path / "tok")
    variants = {
        "bloom": transformers.BloomConfig(hidden_size=64, n_layer=2, n_head=4, **common,
                                          apply_residual_connection_post_layernorm=True),
        "opt": transformers.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                      word_embed_proj_dim=64, do_layer_norm_before=False, **common),
    }
    for name, config in variants.items():
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    bloom = wb.load_model(tmp_path / "bloom", progress=False)
    # the self-check measured that the blocks' writes do not sum to the stream's change (the skip connection
    # carries the normed stream), so the trace refuses before its own check of that fact is reached
    with pytest.raises(wb.UnsupportedModelError, match="writes sum to the residual stream.s change.*which failed on"):
        wb.trace_super_weight(bloom, weight=(1, 3, 5), prompt=PROMPT, cache=False)
    assert isinstance(wb.head_composition(bloom, null_samples=8, cache=False), wb.Result)
    with pytest.raises(wb.ModelLoadError, match="cannot run this variant"):
        wb.load_model(tmp_path / "opt", progress=False)
