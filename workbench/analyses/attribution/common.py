"""What every attribution method shares: the attributed sequence, its targets, batched forwards.

A *sequence* is the prompt's ids followed by the target tokens. Target ``j`` is the
token at position ``n_prompt + j`` and its context is everything before it; with a
generated continuation every generated token is attributed to all tokens before it
(prompt and earlier generated tokens). Special tokens (BOS, ...) are never attributed, nor, in a chat
prompt (``messages=``), the chat template's own tokens (:mod:`.chat`).
"""

from __future__ import annotations

import numbers

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ...errors import InputError
from .chat import Messages, chat_tokens
from .vocab import special_ids


@dataclass(frozen=True)
class Sequence:
    """The attributed sequence: ids [n_prompt + n_targets] on the model's device."""

    ids: Int[Tensor, " pos"]
    n_prompt: int
    generated: bool  # targets came from greedy generation (else: given by the user)
    attributable: Bool[Tensor, " pos"] = field(repr=False)  # False for special tokens and a chat template's
    text: str | None = None  # the prompt as the model reads it, when it is not the config's prompt (a rendered chat)

    @property
    def n_targets(self) -> int:
        return len(self.ids) - self.n_prompt

    def target_position(self, j: int) -> int:
        return self.n_prompt + j

    def target_id(self, j: int) -> int:
        return int(self.ids[self.n_prompt + j])

    def context(self, j: int) -> Int[Tensor, " ctx"]:
        return self.ids[: self.n_prompt + j]


def as_target(target):
    """A target as the config stores it: text, or a plain int for any integer id (NumPy integers and 0-d tensors
    included, as they come out of argmax); anything else is left for :func:`_target_ids` to refuse."""
    if isinstance(target, Tensor) and target.ndim == 0 and not target.is_floating_point():
        return int(target)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return int(target)
    return target


def _target_ids(model, target) -> list[int]:
    target = as_target(target)
    if isinstance(target, bool):
        raise InputError("target must be a string or a token id")
    if isinstance(target, int):
        if not 0 <= target < model.facts.d_vocab:
            raise InputError(f"target id {target} is not in {model.name}'s vocabulary (ids 0..{model.facts.d_vocab - 1})")
        return [target]
    if not isinstance(target, str) or not target:
        raise InputError("target must be a non-empty string (one or more tokens) or a token id")
    ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    unk = model.tokenizer.unk_token_id
    unk_text = getattr(model.tokenizer, "unk_token", None)
    literal = unk_text is not None and unk_text in target  # e.g. "<|endoftext|>" when that is the unknown token
    bad = [i for i in ids if i >= model.facts.d_vocab or (unk is not None and i == unk and not literal)]
    if not ids or bad:
        raise InputError(
            f"target {target!r} is not in {model.name}'s vocabulary (it tokenizes to {ids}); "
            "give text the tokenizer can encode, or a token id"
        )
    return ids


def _prompt_ids(model, prompt: str, prepend_bos: bool | None, messages: Messages | None):
    """(ids, which ids may be attributed or None for all but special tokens, the text read when it is a chat)."""
    if messages:
        ids, content, text = chat_tokens(model, messages)
        model._check_length(len(ids))
        return (torch.tensor(ids, dtype=torch.long, device=model.device),
                torch.tensor(content, dtype=torch.bool, device=model.device), text)
    if isinstance(prompt, str) and not prompt.strip():
        raise InputError("the prompt is empty: give at least one word to attribute to")
    return model.to_tokens(prompt, prepend_bos=prepend_bos)[0], None, None  # raises on empty / over-long prompts


@torch.no_grad()
def prepare(model, prompt: str, target=None, *, max_new_tokens: int = 3, prepend_bos: bool | None = None,
            messages: Messages | None = None) -> Sequence:
    """Tokenize ``prompt`` and append the targets: ``target`` (text, possibly several tokens,
    or an id) or, when None, ``max_new_tokens`` greedily generated tokens.

    ``messages`` ((role, content) pairs) replace ``prompt``: rendered by the chat template with the assistant's
    turn opened; only the tokens of the messages' contents are attributable (``prepend_bos`` is the template's)."""
    ids, content, text = _prompt_ids(model, prompt, prepend_bos, messages)
    n_prompt = len(ids)
    if target is not None:
        new = torch.tensor(_target_ids(model, target), device=ids.device)
    else:
        if max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1 when no target is given")
        model._check_length(n_prompt + max_new_tokens)
        new = greedy(model, ids, max_new_tokens)
    full = torch.cat([ids, new])
    model._check_length(len(full) - 1)  # the last target is predicted, never fed
    special = torch.tensor(special_ids(model.tokenizer), dtype=torch.long, device=full.device)
    attributable = ~torch.isin(full, special)
    if content is not None:
        attributable[:n_prompt] &= content
        if not attributable[:n_prompt].any():
            raise InputError("the messages hold no text of their own; there is nothing to attribute to")
    if not attributable[:n_prompt].any():
        raise InputError("the prompt holds only special tokens; there is nothing to attribute to")
    return Sequence(full, n_prompt, target is None, attributable, text)


def greedy(model, ids: Int[Tensor, " pos"], n: int) -> Int[Tensor, " n"]:
    """``n`` greedy next tokens after ``ids`` (a KV-cached HF generate)."""
    return model.greedy_ids(ids, n)


def last_logits(model, ids: Int[Tensor, "batch pos"], *, max_tokens: int = 8192) -> Float[Tensor, "batch vocab"]:
    """Next-token logits after each row of ``ids``, in row chunks of at most ``max_tokens`` tokens.

    Only the last position goes through the unembedding (``logits_to_keep=1``).
    """
    rows = max(1, max_tokens // ids.shape[1])
    return torch.cat([model.logits(input_ids=chunk, keep=1)[:, -1] for chunk in ids.split(rows)])


def embed(model, ids: Int[Tensor, "... pos"]) -> Float[Tensor, "... pos d_model"]:
    """Token embeddings as the HF model's first layer sees them (``inputs_embeds``)."""
    return model.embed(ids)


def last_logits_from_embeds(model, embeds: Float[Tensor, "batch pos d_model"], *, max_tokens: int = 8192) -> Tensor:
    """Next-token logits after each row of input embeddings, chunked like :func:`last_logits`."""
    rows = max(1, max_tokens // embeds.shape[1])
    return torch.cat([model.logits(inputs_embeds=chunk, keep=1)[:, -1] for chunk in embeds.split(rows)])
