"""Chat prompts: ``messages=`` rendered by the tokenizer's chat template, with only the messages' own text
attributable.

The template adds role markers, turn separators and the opening of the assistant's turn
(``add_generation_prompt=True``): the model needs them, but they are the same for every prompt, so they are
context that is never attributed (never replaced by ReAGent, kept on the path of integrated gradients, NaN in the
importance) exactly like BOS. A token is attributable when its characters lie inside one message's content.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC

from ...errors import InputError

Messages = tuple[tuple[str, str], ...]  # (role, content) pairs: how a config stores them (hashable, JSON-able)


def as_messages(messages) -> Messages:
    """``messages`` ({"role", "content"} dicts, or (role, content) pairs) as the config stores them."""
    if isinstance(messages, str | bytes | dict) or not isinstance(messages, SequenceABC):
        raise InputError("messages= must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, message in enumerate(messages):
        if isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        elif isinstance(message, SequenceABC) and not isinstance(message, str) and len(message) == 2:
            role, content = message
        else:
            raise InputError(f"message {i} must be a {{'role': ..., 'content': ...}} dict, got {message!r}")
        if not isinstance(role, str) or not isinstance(content, str):
            raise InputError(f"message {i}: its role and content must be strings (text-only chat)")
        out.append((role, content))
    if not out:
        raise InputError("messages= is empty: give at least one {'role': 'user', 'content': ...} message")
    return tuple(out)


def render(model, messages: Messages) -> str:
    """The chat template's text for ``messages``, ending with the opening of the assistant's turn."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{model.name}'s tokenizer has no chat template, so messages= cannot be rendered; "
                         "give the text itself as prompt=")
    try:
        return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                             add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja's TemplateError, e.g. a role the template refuses
        raise InputError(f"{model.name}'s chat template cannot render these messages: {exc}") from exc


def content_spans(text: str, messages: Messages) -> list[tuple[int, int]]:
    """Character spans of each message's content in the rendered ``text``, in order."""
    spans, cursor = [], 0
    for i, (_, content) in enumerate(messages):
        for shown in (content, content.strip()):  # templates may strip the content
            start = text.find(shown, cursor) if shown else -1
            if start >= 0:
                spans.append((start, start + len(shown)))
                cursor = start + len(shown)
                break
        else:
            if content.strip():
                raise InputError(f"the chat template rewrites message {i}'s text, so its tokens cannot be told from "
                                 "the template's; give the rendered text as prompt= instead")
    return spans


def _inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return end > start and any(a <= start and end <= b for a, b in spans)


def chat_tokens(model, messages: Messages) -> tuple[list[int], list[bool], str]:
    """Token ids of the rendered chat, which of them lie inside a message's content, and the rendered text.

    Tokenized as ``apply_chat_template(..., tokenize=True)`` does (no special tokens added: the template
    writes its own). Fast tokenizers give each token's characters; a slow one is tokenized piece by piece
    (template, content, template...), which may split a word at a piece's edge."""
    text = render(model, messages)
    spans = content_spans(text, messages)
    tokenizer = model.tokenizer
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        return ids, [_inside(a, b, spans) for a, b in encoded["offset_mapping"]], text
    ids, attributable, cursor = [], [], 0
    for a, b in [*spans, (len(text), len(text))]:
        for piece, inside in ((text[cursor:a], False), (text[a:b], True)):
            if piece:
                new = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += new
                attributable += [inside] * len(new)
        cursor = b
    return ids, attributable, text
