"""Tokenization shared by everything that has a tokenizer and a vocabulary: ``HookedModel`` and the
shard-reading ``CheckpointWeights`` (``wb.load_weights``), so both turn text into the same ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import InputError

if TYPE_CHECKING:
    from .facts import ModelFacts

Inputs = str | Sequence[str] | Tensor  # a prompt, a batch of prompts, or token ids


class Tokenization:
    """Text <-> token ids. Needs ``tokenizer``, ``facts`` (``d_vocab``, ``n_ctx``), ``name`` and ``device``."""

    if TYPE_CHECKING:  # what the classes that mix this in provide
        tokenizer: Any
        facts: ModelFacts

        @property
        def name(self) -> str: ...

        @property
        def device(self) -> torch.device: ...

    @property
    def default_prepend_bos(self) -> bool:
        """Prepend BOS unless told otherwise, when the tokenizer has one (TransformerLens' default)."""
        return self.tokenizer.bos_token_id is not None

    def to_tokens(self, text: str, *, prepend_bos: bool | None = None) -> Int[Tensor, "1 pos"]:
        """Token ids of one text, shape [1, pos], on the model's device.

        ``prepend_bos=None`` follows :attr:`default_prepend_bos`; pass ``True`` or
        ``False`` to decide explicitly (the HF tokenizer alone never adds one here).
        """
        ids = self._encode(text, prepend_bos)
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def to_tokens_batch(
        self, texts: Sequence[str], *, prepend_bos: bool | None = None
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Right-padded ids and attention mask (1 = real token) for several texts."""
        if isinstance(texts, str) or not texts:
            raise InputError("to_tokens_batch needs a non-empty list of strings")
        rows = [self._encode(t, prepend_bos) for t in texts]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def to_str_tokens(self, text_or_ids: str | Tensor | Sequence[int], *, prepend_bos: bool | None = None) -> list[str]:
        """Each token as the text it stands for (special tokens by name)."""
        ids = self._encode(text_or_ids, prepend_bos) if isinstance(text_or_ids, str) else _flat_ids(text_or_ids)
        return [self.tokenizer.decode([i]) for i in ids]

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return self.tokenizer.decode(_flat_ids(ids))

    def _encode(self, text: str, prepend_bos: bool | None) -> list[int]:
        if not isinstance(text, str):
            raise InputError(f"expected a string prompt, got {type(text).__name__}")
        if not text:
            raise InputError("the prompt is empty: give at least one character of text")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.default_prepend_bos if prepend_bos is None else prepend_bos:
            if self.tokenizer.bos_token_id is None:
                raise InputError(f"{self.name}'s tokenizer has no BOS token; call with prepend_bos=False")
            ids = [self.tokenizer.bos_token_id, *ids]
        if ids and max(ids) >= self.facts.d_vocab:  # e.g. special tokens the tokenizer added beyond the embedding
            raise InputError(f"the prompt contains token id {max(ids)}, outside {self.name}'s vocabulary of {self.facts.d_vocab}")
        self._check_length(len(ids))
        return ids

    def _check_length(self, n: int) -> None:
        if n > self.facts.n_ctx:
            raise InputError(
                f"the prompt is {n} tokens but {self.name} has a context of {self.facts.n_ctx}; "
                "shorten it or split it into several prompts"
            )

    def _as_tokens(self, inputs: Inputs, prepend_bos: bool | None) -> Tensor:
        if isinstance(inputs, str):
            return self.to_tokens(inputs, prepend_bos=prepend_bos)
        if isinstance(inputs, Tensor):
            tokens = inputs if inputs.ndim == 2 else inputs.reshape(1, -1)
            if tokens.shape[-1] == 0:
                raise InputError("the token tensor is empty")
            self._check_length(tokens.shape[-1])
            if tokens.min() < 0 or tokens.max() >= self.facts.d_vocab:
                raise InputError(f"token ids must lie in [0, {self.facts.d_vocab})")
            return tokens.to(self.device)
        raise InputError("pass a string or a [batch, pos] tensor of token ids; use to_tokens_batch for lists")



def _flat_ids(ids) -> list[int]:
    if isinstance(ids, Tensor):
        return ids.reshape(-1).tolist()
    return [int(i) for i in ids]
