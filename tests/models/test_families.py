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
from support.families import FAMILIES, analysis_runs, build_family, outcome, readme_table, save_family
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
def test_writes_reconstruct_the_residual_stream(family, folders):
    """attention write + MLP write = what the block adds; the heads' writes sum to the attention's."""
    model = family_model(family, folders)
    ids = model.to_tokens(PROMPT)
    for layer in range(model.info.n_layers):
        names = [hn.resid_pre(layer), hn.resid_post(layer), hn.attn_out(layer), hn.mlp_out(layer),
                 *model.head_write_names(layer)]
        if not model.arch.parallel_blocks:
            names.append(hn.resid_mid(layer))
        acts = capture(model, names, ids)
        added = acts[hn.resid_post(layer)] - acts[hn.resid_pre(layer)]
        assert rel(acts[hn.attn_out(layer)] + acts[hn.mlp_out(layer)], added) < 1e-5
        if not model.arch.parallel_blocks:
            assert rel(acts[hn.resid_mid(layer)] - acts[hn.resid_pre(layer)], acts[hn.attn_out(layer)]) < 1e-5
        heads, rest = model.head_writes(layer, acts)
        assert rel(heads.sum(2) + rest, acts[hn.attn_out(layer)]) < 1e-5
        if model.arch.mlp != "moe":  # the MLP's own output is its hidden activation through W_out
            mlp = model.mlp_weights(layer)
            acts = capture(model, [hn.mlp_post(layer), model.own_output_name(layer, "mlp")], ids)
            own = acts[hn.mlp_post(layer)] @ mlp.W_out.float() + (mlp.b_out.float() if mlp.b_out is not None else 0)
            assert rel(own, acts[model.own_output_name(layer, "mlp")]) < 1e-5


def _normalise(model, x: torch.Tensor) -> torch.Tensor:
    """x / rms(x) (RMS) or (x - mean) / std (LayerNorm): a norm without its gain and bias."""
    arch = model.arch
    if arch.norm != "rms":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + arch.norm_eps)


@pytest.mark.parametrize("family", ALL)
def test_effective_matrices_reproduce_what_the_model_reads_and_writes(family, folders):
    """W_V with the input norm folded reproduces the measured values; W_O with the output norm and the
    residual multiplier folded reproduces the measured write up to the per-position scale of the norm."""
    model = family_model(family, folders)
    ids = model.to_tokens(PROMPT)
    layer = model.info.n_layers - 1
    names = [hn.resid_pre(layer), hn.attn_v(layer), hn.attn_z(layer), hn.attn_out(layer),
             model.own_output_name(layer, "attn")]
    acts = capture(model, names, ids)
    eff = model.effective_attention_weights(layer)
    x = acts[hn.resid_pre(layer)]
    if model.arch.pre_norms:
        x = _normalise(model, x)
        bias = model.norm_bias(layer, "attn")
    else:
        bias = None
    v = torch.einsum("bpd,hde->bphe", x, eff.W_V.float())
    raw = model.attention_weights(layer)
    if bias is not None:  # a LayerNorm's bias goes through the raw W_V
        v = v + torch.einsum("d,hde->he", bias.float(), raw.W_V.float())
    if raw.b_V is not None:
        v = v + raw.b_V.float()
    assert rel(v, acts[hn.attn_v(layer)].reshape(v.shape)) < 1e-4

    write = torch.einsum("bphd,hde->bpe", acts[hn.attn_z(layer)], eff.W_O.float())
    if eff.b_O is not None:
        write = write + eff.b_O.float()
    if model.arch.post_norms:  # the norm's per-position scale is all the weights cannot hold
        out = acts[model.own_output_name(layer, "attn")]
        write = write * torch.rsqrt(out.square().mean(-1, keepdim=True) + model.arch.norm_eps)
    assert rel(write, acts[hn.attn_out(layer)]) < 1e-4


@pytest.mark.parametrize("family", ALL)
def test_whole_head_composition_is_the_formula_on_effective_matrices(family, folders):
    model = family_model(family, folders)
    result = wb.head_composition(model, null_samples=8, cache=False)
    n = model.info.n_kv_heads
    writer = model.effective_attention_weights(0).expanded()
    reader = model.effective_attention_weights(1).expanded()
    for wh, rh in ((0, 0), (1, model.info.n_heads - 1)):
        ov = writer.W_V[wh].double() @ writer.W_O[wh].double()
        qk = reader.W_Q[rh].double() @ reader.W_K[rh].double().T
        expected = {"Q": dense_score(ov, qk), "K": dense_score(ov, qk.T),
                    "V": dense_score(ov, reader.W_V[rh].double() @ reader.W_O[rh].double())}
        for kind, value in expected.items():
            got = float(result.tensors[f"head/{kind}"][0, wh, 1, rh])
            assert got == pytest.approx(float(value), rel=1e-4), (kind, wh, rh, n)


@pytest.mark.parametrize("family", [f for f in ALL if FAMILIES[f][0] not in ("MixtralConfig", "Qwen2MoeConfig")])
def test_trace_parts_sum_to_the_mlp_input_and_its_pre_activation(family, folders):
    model = family_model(family, folders)
    ids = model.to_tokens(PROMPT)
    layer = model.info.n_layers - 1
    stream = hn.resid_pre(layer) if model.arch.parallel_blocks else hn.resid_mid(layer)
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
        if model.arch.post_norms:  # the output norm would cap the spike: its gain makes it (as in Gemma 3)
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
    p = torch.zeros(model.info.d_model)
    p[3] = 1.0
    kv = 0 // writer.heads_per_kv
    with torch.no_grad():
        writer.W_V[kv].zero_()
        writer.W_V[kv][:, 0] = torch.randn(model.info.d_model, generator=torch.Generator().manual_seed(0))
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
    with pytest.raises(wb.UnsupportedModelError, match="normed stream"):
        wb.trace_super_weight(bloom, weight=(1, 3, 5), prompt=PROMPT, cache=False)
    assert isinstance(wb.head_composition(bloom, null_samples=8, cache=False), wb.Result)
    with pytest.raises(wb.ModelLoadError, match="cannot run this variant"):
        wb.load_model(tmp_path / "opt", progress=False)
