"""ReAGent's part-of-speech replacer (``replacer="pos"``): the offline tag table, its cache, the sampler."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

import workbench as wb
from support.attribution_planted import COPY_POSITION, build_copy_model
from workbench.analyses.attribution import pos_tags
from workbench.analyses.attribution.common import prepare
from workbench.analyses.attribution.pos_tags import pos_table, tag_word
from workbench.analyses.attribution.replacers import build_sampler, candidate_ids, pos_sampler
from workbench.analyses.attribution.vocab import special_ids

PROMPT = "The quick brown fox jumps over"  # the copy model's prompt: position 2 ('h') is copied
WORDS = ["The", "Ġthe", "Ġa", "Ġcat", "Ġdog", "Ġmat", "Ġsat", "Ġran", "Ġon", "Ġunder", "Ġand", "Ġred", "Ġbig",
         "ĠParis", "Ġ42", "ĠIt", "Ġquickly", "ville", ".", ",", "!"]
EXPECTED = {"The": "DET", " the": "DET", " a": "DET", " cat": "NOUN", " dog": "NOUN", " mat": "NOUN", " sat": "VERB",
            " ran": "VERB", " on": "ADP", " under": "ADP", " and": "CCONJ", " red": "ADJ", " big": "ADJ",
            " Paris": "PROPN", " 42": "NUM", " It": "PRON", " quickly": "ADV", "ville": "X", ".": "PUNCT",
            ",": "PUNCT", "!": "PUNCT", "<bos>": "SPECIAL", "<eos>": "SPECIAL", "<unk>": "SPECIAL"}


def word_tokenizer(words=WORDS):
    """A word-level tokenizer with GPT-2's leading-space marks: specials, then ``words`` in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<bos>", "<eos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def stub_model(tokenizer):
    """What a sampler asks of a model: its tokenizer and vocabulary size."""
    return SimpleNamespace(tokenizer=tokenizer, facts=SimpleNamespace(d_vocab=len(tokenizer)))


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(pos_tags, "_MEMORY", {})


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    return wb.load_model(str(build_copy_model(tmp_path_factory.mktemp("planted") / "copy")), progress=False)


def off_class(table, ids, draws):
    """Draws [n, pos] that are not of their position's class (tag, leading space, case), or are the original."""
    klass = table.classes()
    return (klass[draws] != klass[ids][None]) | (draws == ids[None])


def test_tags_of_known_words(tmp_path):
    tok = word_tokenizer()
    table = pos_table(tok, tmp_path)
    got = {tok.decode([i]): table.tag_of(i) for i in range(len(tok))}
    assert got == EXPECTED
    assert all(table.space[tok.convert_tokens_to_ids(w)] == w.startswith("Ġ") for w in WORDS)


def test_word_rules():
    lex = {"run": frozenset({"NOUN", "VERB", "VERB+"}), "old": frozenset({"NOUN", "ADJ", "ADJ+"}),
           "capital": frozenset({"NOUN", "ADJ"}), "Aachen": frozenset({"NOUN"}), "kindly": frozenset({"ADJ", "ADV"})}
    cases = {"run": "VERB", "old": "ADJ", "capital": "NOUN", "Aachen": "PROPN", "Kindly": "ADV", "Zorblax": "PROPN",
             "zorb": "X", "\n\n": "SPACE", "3.14": "NUM", "$": "SYM", "...": "PUNCT", "\ufffd": "X", "Can": "AUX",
             "n't": "ADV", "'s": "AUX", "that": "DET", "&": "CCONJ"}
    assert {w: tag_word(w, lex) for w in cases} == cases


@pytest.mark.parametrize("which", ["words", "bytes"])
def test_pos_sampler_draws_only_its_class(which, copy_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    if which == "words":
        model = stub_model(word_tokenizer())
        ids = torch.tensor(model.tokenizer("The cat sat on the red mat, quickly.")["input_ids"])
    else:
        model = copy_model
        ids = prepare(copy_model, "I saw a cat, 2 dogs & 3 birds!", None, max_new_tokens=1).ids
    table = pos_table(model.tokenizer)
    sampler = build_sampler(model, ids, "pos")
    draws = sampler.draw(4000, len(ids), torch.Generator().manual_seed(0))
    checked = torch.tensor([t not in sampler.fallback and table.tag_of(int(i)) != "SPECIAL" for t, i in enumerate(ids)])
    assert checked.sum() >= 5
    assert not off_class(table, ids, draws)[:, checked].any()  # exact, over 4000 draws per position
    for t in checked.nonzero()[:, 0].tolist():  # uniform over the whole class: the table row is exactly that
        members = (table.classes()[: model.facts.d_vocab] == table.classes()[ids[t]]).nonzero()[:, 0]
        members = members[members != ids[t]]
        expected = torch.zeros(model.facts.d_vocab)
        expected[members] = 1.0 / len(members)
        assert torch.allclose(sampler.table[t], expected)
    # negative control: the same check rejects the uniform replacer's draws
    uniform = build_sampler(model, ids, "uniform").draw(4000, len(ids), torch.Generator().manual_seed(0))
    assert off_class(table, ids, uniform)[:, checked].float().mean() > 0.5


def test_specials_are_never_sampled(copy_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    tok = copy_model.tokenizer
    specials = special_ids(tok)
    ids = torch.tensor([specials[0], *tok("ab. c")["input_ids"], specials[1], *tok("d")["input_ids"]])
    gen = torch.Generator().manual_seed(0)
    draws = build_sampler(copy_model, ids, "pos").draw(3000, len(ids), gen)
    assert not torch.isin(draws, torch.tensor(specials)).any()  # at every position, the special ones included
    # negative control: with the specials left among the candidates, the special positions draw specials
    leaky = pos_sampler(copy_model, ids, torch.arange(copy_model.facts.d_vocab)).draw(3000, len(ids), gen)
    assert torch.isin(leaky, torch.tensor(specials)).any()


def test_table_is_cached_and_rebuilt_for_another_tokenizer(tmp_path, monkeypatch):
    first = pos_table(word_tokenizer(), tmp_path)
    assert not first.from_cache and len(list((tmp_path / "pos-tags").glob("*.safetensors"))) == 1
    monkeypatch.setattr(pos_tags, "_MEMORY", {})
    real_build = pos_tags.build_table

    def must_not_build(*a, **k):
        raise AssertionError("the table was rebuilt although it is cached")

    monkeypatch.setattr(pos_tags, "build_table", must_not_build)
    again = pos_table(word_tokenizer(), tmp_path)
    assert again.from_cache and torch.equal(again.tag, first.tag) and torch.equal(again.space, first.space)
    # same size and specials, one word changed at the same id: the key must see it
    changed = word_tokenizer([("Ġquickly" if w == "Ġcat" else "Ġcat" if w == "Ġquickly" else w) for w in WORDS])
    cat_id = changed.convert_tokens_to_ids("Ġquickly")
    with pytest.raises(AssertionError, match="rebuilt"):
        pos_table(changed, tmp_path)  # a new tokenizer is never served the old table
    monkeypatch.setattr(pos_tags, "build_table", real_build)
    rebuilt = pos_table(changed, tmp_path)
    assert not rebuilt.from_cache and rebuilt.tag_of(cat_id) == "ADV" and first.tag_of(cat_id) == "NOUN"
    # negative control: a key of the tokenizer's size alone would hand the changed tokenizer the stale table
    monkeypatch.setattr(pos_tags, "_MEMORY", {})
    monkeypatch.setattr(pos_tags, "tokenizer_digest", lambda tok: f"size-{len(tok)}")
    pos_table(word_tokenizer(), tmp_path / "weak")
    monkeypatch.setattr(pos_tags, "_MEMORY", {})
    stale = pos_table(changed, tmp_path / "weak")
    assert stale.from_cache and stale.tag_of(cat_id) == "NOUN"  # wrong: what the real key prevents


def test_a_class_without_other_tokens_falls_back_to_uniform(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    model = stub_model(word_tokenizer())
    ids = torch.tensor(model.tokenizer("<bos>The cat and the dog")["input_ids"])
    sampler = build_sampler(model, ids, "pos")
    tokens = [model.tokenizer.decode([i]) for i in ids]
    # " and" is the only CCONJ, "The" the only capital-free-space DET: no other token of their class
    assert [tokens[t] for t in sampler.fallback] == ["The", " and"]
    assert sampler.tags == ("SPECIAL", "DET", "NOUN", "CCONJ", "DET", "NOUN")
    cands = candidate_ids(model)
    for t in sampler.fallback:  # uniform over every candidate but the token itself
        row = sampler.table[t]
        expected = torch.zeros_like(row)
        expected[cands] = 1.0
        expected[ids[t]] = 0.0
        assert torch.allclose(row, expected / expected.sum())
    # negative control: a position whose class has other tokens is not listed, and never drawn uniformly
    assert 2 not in sampler.fallback and (sampler.table[2] > 0).sum() == 2  # " cat" -> " dog" or " mat"


def test_reagent_with_the_pos_replacer(copy_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="replacer='pos'"):
        result = wb.reagent(copy_model, prompt=PROMPT, cache=False, max_new_tokens=1, keep_top_n=3, max_steps=300,
                            replacer="pos")
    assert result.config.replacer == "pos"
    imp = result.importance(0)
    assert math.isnan(imp[0]) and torch.isfinite(imp[1:]).all()
    assert int(result.tables["targets"]["top_context_position"][0]) == COPY_POSITION
    tags = result.meta["replacer_tags"]
    assert len(tags) == len(result.meta["ids"]) - 1 and tags[0] == "SPECIAL" and tags[COPY_POSITION] == "X"
    assert [result.meta["tokens"][p] for p in result.meta["replacer_fallback"]] == ["i"]  # the bytes' only lower PRON
    assert any(name == "replacer" for name, _ in result.summary())
    uniform = wb.reagent(copy_model, prompt=PROMPT, cache=False, max_new_tokens=1, keep_top_n=3, max_steps=300)
    assert "replacer_tags" not in uniform.meta  # negative control: only the pos replacer records tags


def test_reagent_reports_the_fallback(copy_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    prompt = "xb&cd"  # "&" is the byte vocabulary's only CCONJ (and "a" its only lower-case DET)
    with pytest.warns(UserWarning, match=r"replacer='pos'.*'&' \(CCONJ\)"):
        result = wb.reagent(copy_model, prompt=prompt, cache=False, max_new_tokens=1, keep_top_n=2, max_steps=20,
                            replacer="pos")
    tokens = result.meta["tokens"]
    assert [tokens[p] for p in result.meta["replacer_fallback"]] == ["&"]
    assert "uniform at '&'" in dict(result.summary())["replacer"]


SENTENCES = {  # the embedded tokenizer's tokens, each with its expected tag
    "The Eiffel Tower is located in the city of Paris.":
        "DET X X NOUN AUX VERB ADP DET NOUN ADP PROPN PUNCT",
    "She quickly walked to the old library and read two books.":
        "PRON ADV VERB ADP DET ADJ NOUN CCONJ VERB NUM NOUN PUNCT",
    "If it rains tomorrow, we will not go outside!":
        "SCONJ PRON NOUN NOUN PUNCT PRON AUX ADV VERB ADP PUNCT",
}


@pytest.mark.real
def test_tags_and_draws_on_the_embedded_tokenizer(embedded):
    table = pos_table(embedded.tokenizer)
    gen = torch.Generator().manual_seed(0)
    for text, expected in SENTENCES.items():
        ids = torch.tensor(embedded.tokenizer(text)["input_ids"])
        assert " ".join(table.tag_of(int(i)) for i in ids) == expected, text
        sampler = build_sampler(embedded, ids, "pos")
        assert sampler.fallback == ()
        draws = sampler.draw(2000, len(ids), gen)
        assert not off_class(table, ids, draws).any()
        assert not torch.isin(draws, torch.tensor(special_ids(embedded.tokenizer))).any()


def test_without_the_lexicon_the_error_names_the_extra(monkeypatch, tmp_path):
    real = pos_tags.importlib.util.find_spec
    monkeypatch.setattr(pos_tags.importlib.util, "find_spec",
                        lambda name, *a: None if name == "lemminflect" else real(name, *a))
    with pytest.raises(wb.MissingExtraError, match=re.escape("pip install 'lm-workbench[pos]'")):
        pos_table(word_tokenizer(), tmp_path)
    monkeypatch.setattr(pos_tags.importlib.util, "find_spec", real)
    assert pos_table(word_tokenizer(), tmp_path).tag_of(3) == "DET"  # negative control: installed, it builds
