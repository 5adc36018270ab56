"""Replacement-token samplers for ReAGent: uniform, same part of speech, the model's own predictions, a masked LM.

Every replacer turns the attributed sequence into a per-position sampling rule, built
once per sequence, then draws any number of replacement tokens for all positions in
one call from given uniform numbers (ReAGent's counter-based draws) or a CPU
``torch.Generator``, so the same seed gives the same tokens on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ...errors import InputError
from .pos_tags import TAG_ID, TAGS, pos_table
from .vocab import special_ids

REPLACERS = ("uniform", "pos", "predictions", "mlm")


def candidate_ids(model) -> Int[Tensor, " n"]:
    """Every token id of the model's vocabulary that is not a special token."""
    keep = torch.ones(model.facts.d_vocab, dtype=torch.bool)
    special = [i for i in special_ids(model.tokenizer) if i < model.facts.d_vocab]
    keep[special] = False
    n_tok = len(model.tokenizer)
    if n_tok < model.facts.d_vocab:  # padded embedding rows the tokenizer never produces
        keep[n_tok:] = False
    return keep.nonzero().squeeze(-1)


@dataclass(frozen=True)
class Sampler:
    """Replacement tokens for one sequence, picked from given uniform numbers (see ``draws.py``).

    ``table`` None: uniform over ``candidates``; otherwise ``table[t]`` is the sampling
    distribution for position ``t`` (rows sum to 1, special tokens and the original token
    excluded). ``tags``: each position's part-of-speech tag (``replacer="pos"`` only);
    ``fallback``: the positions whose tag class had no other token, drawn uniformly instead.
    """

    candidates: Int[Tensor, " n"]
    table: Float[Tensor, "pos vocab"] | None = None
    tags: tuple[str, ...] | None = None
    fallback: tuple[int, ...] = ()

    def pick(self, u: Float[Tensor, "rows width"]) -> Int[Tensor, "rows width"]:
        """One replacement token per entry of ``u`` (U[0, 1) numbers; column t is position t), on CPU."""
        if self.table is None:
            idx = (u * len(self.candidates)).long().clamp_(max=len(self.candidates) - 1)
            return self.candidates[idx]
        # inverse CDF per position; right=True never lands on a zero-probability token
        cdf = self.table[: u.shape[1]].double().cumsum(-1)  # [width, vocab]
        scaled = (u * cdf[:, -1]).T.contiguous()  # [width, rows], scaled by the total: rounding never overshoots
        return torch.searchsorted(cdf, scaled, right=True).clamp_(max=cdf.shape[1] - 1).T.contiguous()

    def draw(self, n: int, width: int, generator: torch.Generator) -> Int[Tensor, "n width"]:
        """``n`` independent replacement tokens for each of the first ``width`` positions (on CPU)."""
        return self.pick(torch.rand(n, width, generator=generator, dtype=torch.float64))


def _table_from_logits(logits: Float[Tensor, "pos vocab"], ids: Int[Tensor, " pos"], candidates: Tensor) -> Tensor:
    """Softmax over non-special tokens, with each position's original token excluded."""
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[candidates] = True
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    masked[torch.arange(len(ids)), ids] = float("-inf")  # a replacement must change the token
    return torch.softmax(masked, dim=-1)


@torch.no_grad()
def predictions_sampler(model, ids: Int[Tensor, " pos"], candidates: Tensor) -> Sampler:
    """Replacement for position t drawn from the model's own next-token distribution after ids[:t].

    One forward over the sequence gives every position's distribution (causal: the
    prediction at t-1 sees only the original prefix). Position 0 has no prefix: uniform.
    """
    logits = model.logits(input_ids=ids[None])[0].cpu()  # [pos, vocab]
    vocab = model.facts.d_vocab
    shifted = torch.cat([torch.zeros(1, logits.shape[-1]), logits[:-1]])[:, :vocab]  # [pos, vocab]
    return Sampler(candidates, _table_from_logits(shifted, ids.cpu(), candidates))


def pos_sampler(model, ids: Int[Tensor, " pos"], candidates: Tensor) -> Sampler:
    """Replacement for position t drawn uniformly from the vocabulary tokens of the same coarse part-of-speech
    class as ``ids[t]`` (same UPOS tag, leading space and case, :mod:`.pos_tags`), special tokens and ``ids[t]``
    itself excluded: the replacer of Inseq and the authors' code, with a tag table built offline.

    A position whose class holds no other candidate falls back to uniform over ``candidates`` (without
    ``ids[t]``) and is listed in ``Sampler.fallback``; special tokens (never replaced by ReAGent) are not listed.
    """
    pos_tab = pos_table(model.tokenizer)
    vocab = model.facts.d_vocab
    n = min(vocab, len(pos_tab.tag))
    klass = torch.full((vocab,), -1, dtype=torch.long)  # -1: padded rows the tokenizer never produces
    klass[:n] = pos_tab.classes()[:n]
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[candidates] = True
    ids = ids.cpu()
    table = torch.zeros(len(ids), vocab)
    tags, fallback = [], []
    for t, tok in enumerate(ids.tolist()):
        tag = TAGS[int(pos_tab.tag[tok])] if tok < len(pos_tab.tag) else "X"
        tags.append(tag)
        row = allowed & (klass == klass[tok]) if tok < n else torch.zeros(vocab, dtype=torch.bool)
        row[tok] = False
        if not row.any():
            row = allowed.clone()
            row[tok] = False
            if tag != TAGS[TAG_ID["SPECIAL"]]:
                fallback.append(t)
        table[t] = row.float() / row.sum()
    return Sampler(candidates, table, tuple(tags), tuple(fallback))


class MaskedLM:
    """A masked language model used as ReAGent's replacer (the paper used RoBERTa).

    It must share the attributed model's vocabulary: every token string of the model's
    tokenizer must have the same id in the masked LM's tokenizer (extra tokens such as
    its mask token may follow). Load one with :meth:`from_folder`.
    """

    def __init__(self, mlm_model, mlm_tokenizer, source: str = "<in memory>"):
        if mlm_tokenizer.mask_token_id is None:
            raise InputError(f"the masked LM at {source} has no mask token; a masked-LM replacer needs one")
        self.model = mlm_model.eval()
        self.tokenizer = mlm_tokenizer
        self.source = source

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device | None = None) -> "MaskedLM":
        """Load a saved HF masked LM (``save_pretrained`` folder) and its tokenizer, offline."""
        from ...models.loading import load_masked_lm

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"masked LM folder {folder} does not exist; save one with save_pretrained(folder)")
        model, tok = load_masked_lm(folder, device)
        return cls(model, tok, str(folder))

    def check_vocabulary(self, model) -> None:
        ours, theirs = model.tokenizer.get_vocab(), self.tokenizer.get_vocab()
        wrong = [tok for tok, i in ours.items() if i < model.facts.d_vocab and theirs.get(tok) != i]
        if wrong:
            raise InputError(
                f"the masked LM at {self.source} does not share {model.name}'s vocabulary ({len(wrong)} token(s) differ, "
                f"e.g. {wrong[:3]!r}); use a masked LM trained with the same tokenizer, or replacer='uniform'"
            )

    @torch.no_grad()
    def sampler(self, model, ids: Int[Tensor, " pos"], candidates: Tensor) -> Sampler:
        """Mask each position in turn (one batched forward of ``pos`` rows) and use the MLM's distribution there."""
        self.check_vocabulary(model)
        device = next(self.model.parameters()).device
        n = len(ids)
        rows = ids.cpu().repeat(n, 1)  # [pos, pos]: row t has position t masked
        rows[torch.arange(n), torch.arange(n)] = self.tokenizer.mask_token_id
        logits = self.model(input_ids=rows.to(device)).logits.cpu()  # [pos, pos, mlm_vocab]
        at_mask = logits[torch.arange(n), torch.arange(n), : model.facts.d_vocab]  # [pos, vocab]
        return Sampler(candidates, _table_from_logits(at_mask, ids.cpu(), candidates))


def build_sampler(model, ids: Int[Tensor, " pos"], replacer: str, mlm: MaskedLM | None = None) -> Sampler:
    """The sampler for ``replacer`` (one of :data:`REPLACERS`) on the sequence ``ids``."""
    candidates = candidate_ids(model)
    if replacer == "uniform":
        return Sampler(candidates)
    if replacer == "pos":
        return pos_sampler(model, ids, candidates)
    if replacer == "predictions":
        return predictions_sampler(model, ids, candidates)
    if replacer == "mlm":
        if mlm is None:
            raise InputError("replacer='mlm' needs a masked LM: pass mlm=MaskedLM.from_folder(folder) or set mlm_path")
        return mlm.sampler(model, ids, candidates)
    raise InputError(f"unknown replacer {replacer!r}; choose one of {', '.join(REPLACERS)}")
