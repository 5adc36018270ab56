"""Model quality on the evaluation text, and next-token distributions, for weight experiments."""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from ...corpus import eval_text, token_windows
from ...errors import InputError


def text_digest(path: str | None) -> str:
    """Short SHA-256 of the evaluation text, so a cached result follows the file's content."""
    return hashlib.sha256(eval_text(path).encode()).hexdigest()[:16]


def eval_windows(model, path: str | None, n_windows: int, window: int) -> Int[Tensor, "n window"]:
    """``n_windows`` windows of ``window`` tokens from the evaluation text (see :func:`token_windows`)."""
    return token_windows(model, eval_text(path), window=window, max_windows=n_windows)


@torch.no_grad()
def evaluate(
    model, windows: Int[Tensor, "n pos"], *, batch_size: int = 8, recorder=None,
    before: Callable[[int], None] | None = None, keep: bool = False, reference: list[Tensor] | None = None,
) -> tuple[float, float, list[Tensor] | None]:
    """Mean next-token loss (nats) over ``windows``, mean KL(reference || this model), kept log-probs.

    ``recorder``: an optional :class:`StreamingRecorder` whose hooks stay on (e.g. to trace
    the residual stream in the same pass); ``before(start)`` is called before each batch
    chunk; ``keep``: return each chunk's log-probabilities [b, pos - 1, vocab] (the intact
    run), ``reference``: such a list, to measure how far this run's predictions moved
    (KL is NaN without one).
    """
    total, kl_total, count, kept = 0.0, 0.0, 0, []
    for i, start in enumerate(range(0, windows.shape[0], batch_size)):
        chunk = windows[start : start + batch_size]  # [b, pos]
        if before is not None:
            before(start)
        logits = recorder.run(chunk, offset=start) if recorder is not None else model(chunk)  # [b, pos, vocab]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, pos - 1, vocab]
        total += -logp.gather(-1, chunk[:, 1:, None]).double().sum().item()
        count += logp.shape[0] * logp.shape[1]
        if reference is not None:
            ref = reference[i]
            kl_total += (ref.exp() * (ref - logp)).sum(-1).double().sum().item()
        if keep:
            kept.append(logp)
    loss = total / count
    kl = kl_total / count if reference is not None else float("nan")
    return (loss if math.isfinite(loss) else float("inf")), kl, (kept if keep else None)


def mean_loss(model, windows: Int[Tensor, "n pos"], *, batch_size: int = 8, recorder=None, before=None) -> float:
    """Mean next-token cross-entropy (nats) over every predicted token of ``windows`` (see :func:`evaluate`)."""
    return evaluate(model, windows, batch_size=batch_size, recorder=recorder, before=before)[0]


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
