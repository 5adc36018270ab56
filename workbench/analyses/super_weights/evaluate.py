"""Model quality on the evaluation text, next-token distributions, and the weight edit, for weight experiments."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import replace
from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from ...corpus import eval_text, token_windows
from ...errors import InputError


def text_digest(path: str | None) -> str:
    """Short SHA-256 of the evaluation text, so a cached result follows the file's content."""
    return hashlib.sha256(eval_text(path).encode()).hexdigest()[:16]


def with_eval_digest(model, config):
    """``Analysis.prepare`` of the analyses that read an evaluation text: the config with the text's digest
    filled in (a config's ``eval_digest`` is always derived, never given)."""
    eval_file = None if config.eval_file is None else str(config.eval_file)  # a Path as given by the user
    return replace(config, eval_file=eval_file, eval_digest=text_digest(eval_file))


def with_prompts_and_digest(model, config):
    """``Analysis.prepare`` of detection and super experts: the prompts checked (one string: a tuple of one),
    then :func:`with_eval_digest`."""
    return with_eval_digest(model, replace(config, prompts=check_prompts(config.prompts)))


def eval_windows(model, path: str | None, n_windows: int, window: int) -> Int[Tensor, "n window"]:
    """``n_windows`` windows of ``window`` tokens from the evaluation text (see :func:`token_windows`)."""
    return token_windows(model, eval_text(path), window=window, max_windows=n_windows)


@torch.no_grad()
def next_token_table(model, prompts: Sequence[str], setting: str, top_k: int = 5) -> pd.DataFrame:
    """Top-``top_k`` next tokens after each prompt: one row per (prompt, rank)."""
    if not prompts:
        return pd.DataFrame(columns=["setting", "prompt", "rank", "token", "probability"])
    ids, mask = model.to_tokens_batch(list(prompts))
    logits = model(ids, attention_mask=mask)  # [batch, pos, vocab]
    last = mask.sum(1) - 1  # right padding: the last real token of each prompt
    probs = torch.softmax(logits[torch.arange(len(prompts)), last].float(), dim=-1)  # [batch, vocab]
    p, tok = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    rows = [
        {"setting": setting, "prompt": prompt, "rank": r + 1, "token": model.tokenizer.decode([int(tok[i, r])]),
         "probability": float(p[i, r])}
        for i, prompt in enumerate(prompts) for r in range(p.shape[1])
    ]
    return pd.DataFrame(rows)


@contextmanager
def scaled(model, coords, scale: float):
    """The ``W_out`` weights at ``coords`` (layer, row, col) multiplied by ``scale`` inside the block; restored after."""
    views = {layer: model.mlp_weights(layer).W_out for layer in sorted({c[0] for c in coords})}
    with model.restoring(*views.values()), torch.no_grad():
        for layer, row, col in coords:
            views[layer][col, row] *= scale
        yield


def check_prompts(prompts) -> tuple[str, ...]:
    """Prompts as a tuple of non-empty strings, or :class:`InputError`."""
    if isinstance(prompts, str):
        prompts = (prompts,)
    prompts = tuple(prompts)
    if not prompts:
        raise InputError("the prompt list is empty: give at least one prompt, e.g. prompts=['Summer is hot. Winter is']")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"every prompt must be a non-empty string, got {p!r}")
    return prompts
