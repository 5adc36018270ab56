"""The evaluation text: our shipped corpus (``data/eval_corpus.txt``) or a user's text file.

Analyses that measure model quality (loss / perplexity after an edit) or that need
activations on "ordinary" text read it through :func:`eval_text` and cut it into
fixed-length windows with :func:`token_windows`; :func:`evaluate` / :func:`mean_loss` measure a
model's next-token loss on such windows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from ._paths import data_file
from .errors import InputError

if TYPE_CHECKING:
    from .models.contract import WeightSource

CORPUS_FILE = "eval_corpus.txt"

# The last text read, by (path, modification time in ns, size): a run reads its text twice (its digest in the
# analysis' prepare, its windows in compute); the second read is this one while the file is unchanged.
_LAST_READ: dict[tuple[str, int, int], str] = {}


def eval_text(path: str | os.PathLike | None = None) -> str:
    """The evaluation text: the shipped corpus, or the UTF-8 text file at ``path``.

    Raises :class:`InputError` for a missing, unreadable, non-UTF-8 or empty file.
    """
    file = data_file(CORPUS_FILE) if path is None else Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"evaluation text {str(file)!r} does not exist or is not a file; pass the path of a UTF-8 text file")
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _LAST_READ:
        return _LAST_READ[key]
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"evaluation text {str(file)!r} is not UTF-8 text ({err.reason}); save it as UTF-8") from None
    except OSError as err:
        raise InputError(f"cannot read evaluation text {str(file)!r}: {err.strerror}") from None
    if not text.strip():
        raise InputError(f"evaluation text {str(file)!r} is empty; give a file with some prose in it")
    _LAST_READ.clear()
    _LAST_READ[key] = text
    return text


def token_windows(
    model: WeightSource,
    text: str | None = None,
    *,
    window: int = 128,
    max_windows: int | None = None,
    prepend_bos: bool | None = None,
) -> Int[Tensor, "n_windows window"]:
    """Cut ``text`` (default: :func:`eval_text`) into non-overlapping windows of ``window`` tokens.

    The whole text is tokenized once; the tail that does not fill a window is dropped
    (unless the text is shorter than one window, then the single short window is kept).
    With a BOS token (``prepend_bos``, default: the model's habit) every window starts
    with BOS followed by ``window - 1`` text tokens, so each window looks like a fresh
    document. ``max_windows`` keeps the first windows only (evenly spread over the text).
    Returns ids on the model's device.
    """
    if window < 2:
        raise InputError(f"window must be at least 2 tokens, got {window}")
    if max_windows is not None and max_windows < 1:
        raise InputError(f"max_windows must be at least 1, got {max_windows}")
    if window > model.facts.n_ctx:
        raise InputError(f"window of {window} tokens exceeds {model.name}'s context of {model.facts.n_ctx}")
    text = eval_text() if text is None else text
    if not text.strip():
        raise InputError("the evaluation text is empty")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
    if bos and model.tokenizer.bos_token_id is None:
        raise InputError(f"{model.name}'s tokenizer has no BOS token; call with prepend_bos=False")
    body = window - 1 if bos else window
    flat = torch.tensor(ids, dtype=torch.long)
    n = len(ids) // body
    if n == 0:
        rows = flat[None, :]  # [1, len] shorter than a window: keep what there is
    else:
        rows = flat[: n * body].reshape(n, body)  # [n, body]
        if max_windows is not None and n > max_windows:
            pick = torch.linspace(0, n - 1, max_windows).round().long()  # evenly spread, deterministic
            rows = rows[pick]
    if bos:
        rows = torch.cat([torch.full((rows.shape[0], 1), model.tokenizer.bos_token_id), rows], dim=1)
    if rows.max() >= model.facts.d_vocab:
        raise InputError(f"the text contains token id {int(rows.max())}, outside {model.name}'s vocabulary")
    return rows.to(model.device)


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
