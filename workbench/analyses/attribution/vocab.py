"""A tokenizer's special tokens: never replaced, never drawn as a replacement, never attributed."""

from __future__ import annotations


def special_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, PAD, chat markers, ...)."""
    ids = set(tokenizer.all_special_ids)
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return sorted(ids)
