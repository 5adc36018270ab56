"""Attribution of chat prompts (``messages=``): the template's tokens are context, never attributed."""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from workbench.analyses.attribution.chat import as_messages
from workbench.cache import ResultCache
from workbench.render.attribution import result_heatmaps_html

# a template of the usual shape: role markers and separators around each message, the assistant's turn opened
TEMPLATE = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
FAST = {"n_probes": 2, "max_steps": 5, "max_new_tokens": 1}


@pytest.fixture
def chat_llama(tiny_llama, monkeypatch):
    """The tiny llama with a chat template on its byte tokenizer (for this test only)."""
    monkeypatch.setattr(tiny_llama.tokenizer, "chat_template", TEMPLATE, raising=False)
    return tiny_llama


def _content_positions(tokens: list[str], n_prompt: int) -> list[bool]:
    """Which prompt positions hold a message's text, found from the rendered characters (one byte per token)."""
    text = "".join(tokens[:n_prompt])
    inside = [False] * len(text)
    for m in MESSAGES:
        start = text.index(m["content"])
        inside[start:start + len(m["content"])] = [True] * len(m["content"])
    return inside


@pytest.mark.parametrize("method", ["reagent", "integrated_gradients", "occlusion"])
def test_only_the_messages_text_is_attributed(chat_llama, method):
    result = wb.attribute(chat_llama, messages=MESSAGES, method=method, cache=False,
                          **(FAST if method == "reagent" else {"max_new_tokens": 1}))
    assert result.prompt == "<system>Be brief.</system>\n<user>Capital of France?</user>\n<assistant>"
    assert "".join(result.tokens[:result.n_prompt]) == result.prompt  # a byte per token: the text read is the text
    attributed = [not math.isnan(v) for v in result.importance(0).tolist()]
    assert attributed == _content_positions(result.tokens, result.n_prompt)
    if method == "reagent":  # template positions are never replaced: their probe scores stay at 0
        outside = ~torch.tensor(attributed)
        assert (result.tensors["probe_importance"][0][:, outside] == 0).all()


def test_messages_key_the_cache_and_are_recorded(chat_llama, tmp_path):
    store = ResultCache(tmp_path)
    first = wb.reagent(chat_llama, messages=MESSAGES, cache=store, **FAST)
    assert first.config.messages == as_messages(MESSAGES) and first.messages == MESSAGES
    other = [*MESSAGES[:1], {"role": "user", "content": "Capital of Spain?"}]
    wb.reagent(chat_llama, messages=other, cache=store, **FAST)
    again = wb.reagent(chat_llama, messages=[tuple(m.values()) for m in MESSAGES], cache=store, **FAST)  # pairs too
    assert store.stats["misses"] == 2 and store.stats["memory_hits"] == 1
    assert again.prompt == first.prompt
    loaded = wb.Result.load(first.save(tmp_path / "chat.safetensors"))
    assert loaded.messages == MESSAGES and loaded.config == first.config


def test_template_tokens_are_drawn_grey(chat_llama):
    result = wb.reagent(chat_llama, messages=MESSAGES, cache=False, **FAST)
    page = result_heatmaps_html(result, 0)
    assert page.count("wb-fixed") == sum(math.isnan(v) for v in result.importance(0).tolist()) > 0


def test_no_chat_template_is_one_clear_error(tiny_llama):
    with pytest.raises(wb.InputError, match="no chat template.*prompt="):
        wb.reagent(tiny_llama, messages=MESSAGES, cache=False, **FAST)


@pytest.mark.parametrize("messages, message", [
    ("hello", "list of"), ([], "empty"), ([{"role": "user"}], "strings"), ([{"role": "user", "content": 3}], "strings"),
])
def test_bad_messages_are_refused(chat_llama, messages, message):
    with pytest.raises(wb.InputError, match=message):
        wb.reagent(chat_llama, messages=messages, cache=False, **FAST)


def test_prompt_and_messages_together_are_refused(chat_llama):
    with pytest.raises(wb.InputError, match="not both"):
        wb.reagent(chat_llama, prompt="Hello", messages=MESSAGES, cache=False, **FAST)


@pytest.mark.real
def test_chat_on_the_embedded_instruct_model(embedded):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    result = wb.reagent(embedded, messages=messages, cache=False, n_probes=2, max_steps=20, max_new_tokens=1)
    # the model reads exactly what its chat template makes of the messages
    expected = embedded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert result.ids[:result.n_prompt] == list(expected)
    attributed = [result.tokens[p] for p, v in enumerate(result.importance(0).tolist()) if not math.isnan(v)]
    assert "".join(attributed) == messages[0]["content"]
    assert result.prompt.startswith("<|im_start|>") and result.prompt.endswith("<|im_start|>assistant\n")
