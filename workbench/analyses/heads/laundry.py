"""The Laundry List task (Merullo et al. 2024): recall the one listed item not yet mentioned again.

A prompt lists N items, then repeats all but one of them (shuffled), then asks for the missing
one, e.g. ``Shopping list: milk, bread, soap.\\nAlready bought: soap, milk.\\nStill to buy:`` ->
`` bread``. Items are single tokens of the model's vocabulary (``item_prefix + word`` encodes to
exactly one token), so the answer is one next-token prediction. Accuracy = the target has the
highest logit among the N listed items (``top1``: highest over the whole vocabulary); chance is 1/N.

Interventions rescale chosen rank-1 components of a head's OV circuit by editing W_O:
``W_O,h <- W_O,h (I + (a - 1) v_i v_i^T)`` turns ``OV = sum s_j u_j v_j^T`` into the same sum with
``s_i -> a s_i`` (v_i orthonormal right singular vectors). Edits happen inside
``model.restoring(...)``: the model is restored bit for bit afterwards, even on error.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..._progress import progress
from ...errors import InputError
from ...results import Result
from .svd import check_weights, head_weights, ov_svd
from ...engine.registry import Analysis
from ...models.contract import HookedSource

# Common concrete nouns; only those that are one token (with the prefix) in the model are used.
DEFAULT_ITEMS = (
    "milk", "bread", "eggs", "cheese", "butter", "apples", "rice", "soap", "salt", "sugar", "tea", "coffee",
    "juice", "water", "beer", "wine", "fish", "meat", "chicken", "beef", "pasta", "flour", "oil", "honey",
    "jam", "soup", "beans", "corn", "nuts", "cake", "pizza", "candy", "paper", "towels", "socks", "shirts",
    "shoes", "hats", "gloves", "pens", "books", "cups", "plates", "forks", "knives", "spoons", "bowls", "lamps",
    "chairs", "tables", "keys", "coins", "bags", "boxes", "batteries", "candles", "flowers", "plants", "seeds",
    "tools", "nails", "rope", "tape", "glue", "paint", "brushes", "toys", "balls", "games", "cards", "maps",
    "phones", "cables", "bottles", "jars", "cans", "lemons", "oranges", "bananas", "grapes", "carrots",
    "onions", "potatoes", "tomatoes", "peppers", "garlic", "yogurt", "cookies", "chips", "sauce", "vinegar",
)
DEFAULT_TEMPLATES = (
    "Shopping list:{items}.\nAlready bought:{repeat}.\nStill to buy:",
    "Alice asked Bob to bring{items}. Bob brought{repeat}, but he forgot the",
    "Packing list:{items}.\nPacked:{repeat}.\nNot packed yet:",
)


@dataclass(frozen=True)
class ListPrompt:
    """One generated prompt: its text, the listed items (token ids), and the missing one."""

    text: str
    template: int
    items: tuple[str, ...]  # in listed order, each with its prefix
    item_ids: tuple[int, ...]
    target: int  # index into items of the one not repeated


def single_token_items(tokenizer, words: Sequence[str] = DEFAULT_ITEMS, prefix: str = " ") -> list[tuple[str, int]]:
    """``(prefix + word, token id)`` for each word that is exactly one token after ``prefix``."""
    out, seen = [], set()
    for word in words:
        ids = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] not in seen:
            seen.add(ids[0])
            out.append((prefix + word, ids[0]))
    return out


def generate_prompts(vocab: Sequence[tuple[str, int]], n_items: int, n_prompts: int, *, seed: int = 0,
                     templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[ListPrompt]:
    """``n_prompts`` prompts per template, each with ``n_items`` distinct items (seeded, reproducible)."""
    if n_items < 2:
        raise InputError("a laundry list needs at least 2 items (one to recall, one repeated)")
    if len(vocab) < n_items:
        raise InputError(f"only {len(vocab)} single-token items available, {n_items} needed; pass more `items` "
                         "(words that are one token in this model) or a different `item_prefix`")
    rng = random.Random(f"laundry-{seed}-{n_items}")
    out = []
    for t, template in enumerate(templates):
        if "{items}" not in template or "{repeat}" not in template:
            raise InputError(f"template {t} needs {{items}} and {{repeat}} fields: {template!r}")
        for _ in range(n_prompts):
            chosen = rng.sample(list(vocab), n_items)
            target = rng.randrange(n_items)
            repeated = [c for i, c in enumerate(chosen) if i != target]
            rng.shuffle(repeated)
            text = template.format(items=",".join(c[0] for c in chosen), repeat=",".join(c[0] for c in repeated))
            out.append(ListPrompt(text, t, tuple(c[0] for c in chosen), tuple(c[1] for c in chosen), target))
    return out


def list_accuracy(last_logits: Float[Tensor, "prompt vocab"], item_ids: Int[Tensor, "prompt n"],
                  target: Int[Tensor, " prompt"]) -> dict[str, Tensor]:
    """Per prompt: ``correct`` (target has the top logit among the items), ``top1`` (over the whole
    vocabulary), ``target_prob`` (softmax over the vocabulary) and ``margin`` (target logit minus the
    best other item's)."""
    item_logits = last_logits.gather(1, item_ids)  # [prompt, n]
    tgt = item_logits.gather(1, target[:, None])[:, 0]
    others = item_logits.scatter(1, target[:, None], float("-inf")).amax(1)
    target_token = item_ids.gather(1, target[:, None])[:, 0]
    return {
        "correct": tgt > others,
        "top1": last_logits.argmax(-1) == target_token,
        "target_prob": last_logits.float().softmax(-1).gather(1, target_token[:, None])[:, 0],
        "margin": tgt - others,
    }


@contextmanager
def rescaled_ov(model, edits: Sequence[tuple[int, int, Sequence[int], float]], *, fold_norm: bool = True) -> Iterator:
    """Within the block, components ``(layer, head, components, scale)`` of OV circuits are rescaled.

    Component indices are those of :func:`~workbench.analyses.heads.svd.ov_svd` (descending singular
    values, norm gain folded in when ``fold_norm``), i.e. the ones ``head_composition`` reports.
    """
    layers = sorted({int(e[0]) for e in edits})
    views = {layer: model.attention_weights(layer).W_O for layer in layers}  # live views [head, d_head, d_model]
    with model.restoring(*views.values()), torch.no_grad():
        if layers:
            svd = ov_svd(head_weights(model, tuple(layers), fold_norm=fold_norm))
            for layer, head, comps, scale in edits:
                comps = [int(c) for c in comps]
                if not 0 <= head < svd.Vh.shape[1] or any(not 0 <= c < svd.Vh.shape[2] for c in comps):
                    raise InputError(f"no head {head} / components {comps} in layer {layer}")
                v = svd.Vh[layers.index(layer), head, comps].to(views[layer].dtype)  # [k, d_model], orthonormal rows
                W_O = views[layer][head]  # [d_head, d_model]
                W_O.add_((scale - 1.0) * (W_O @ v.T) @ v)
        yield model


@dataclass(frozen=True)
class LaundryListConfig:
    n_items: tuple[int, ...] = (2, 3, 4, 6, 8, 10)  # list lengths N
    n_prompts: int = 12  # prompts per template and N
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # need {items} and {repeat}
    items: tuple[str, ...] = DEFAULT_ITEMS  # candidate words; the single-token ones are used
    item_prefix: str = " "  # text before each item (the token boundary)
    seed: int = 0
    # Each intervention: (layer, head, (components, ...), scale); all applied together, compared with none.
    interventions: tuple[tuple[int, int, tuple[int, ...], float], ...] = ()
    fold_norm: bool = True  # component indices as in head_composition
    batch_size: int = 32


@dataclass(frozen=True)
class LaundryListResult(Result):
    """Tables: ``accuracy`` (condition x N x template: accuracy, top-1, target probability, chance),
    ``curve`` (condition x N, all templates pooled), ``prompts`` (every prompt and its outcome)."""

    analysis = "laundry_list"
    title = "Laundry List recall"
    config_cls = LaundryListConfig

    @property
    def n_vocab(self) -> int:
        """Single-token items the lists were drawn from."""
        return int(self.meta["n_vocab"])

    @property
    def curve(self) -> pd.DataFrame:
        """One row per condition x N (all templates pooled): accuracy and chance."""
        return self.tables["curve"]

    def summary(self) -> list[tuple[str, str]]:
        curve = self.curve
        lines = [("model", self.model_id), ("items", f"{self.n_vocab} single-token items")]
        for cond, rows in curve.groupby("condition", sort=False):
            lines.append((f"accuracy ({cond})", ", ".join(f"N={r.n_items}: {r.accuracy:.0%}" for r in rows.itertuples())))
        if self.config.interventions:
            lines.append(("intervention", "; ".join(f"L{l}H{h} components {list(c)} x {s:g}" for l, h, c, s in self.config.interventions)))
        return lines


@torch.no_grad()
def _run(model, prompts: list[ListPrompt], batch_size: int) -> dict[str, Tensor]:
    outs: dict[str, list[Tensor]] = {}
    for start in progress(range(0, len(prompts), batch_size), desc="laundry list"):
        chunk = prompts[start:start + batch_size]
        if len({len(p.items) for p in chunk}) != 1:
            raise InputError("internal: a batch mixes list lengths")
        ids, mask = model.to_tokens_batch([p.text for p in chunk])
        logits = model(ids)  # right-padded + causal: each prompt's last real position is unaffected by padding
        last = logits[torch.arange(len(chunk)), mask.sum(1) - 1]  # [prompt, vocab]
        items = torch.tensor([p.item_ids for p in chunk], device=last.device)
        target = torch.tensor([p.target for p in chunk], device=last.device)
        for k, v in list_accuracy(last, items, target).items():
            outs.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


@torch.no_grad()
def compute_laundry_list(model: HookedSource, config: LaundryListConfig) -> LaundryListResult:
    check_weights(model)
    vocab = single_token_items(model.tokenizer, config.items, config.item_prefix)
    if not config.n_items or len(set(config.n_items)) != len(config.n_items):
        raise InputError(f"n_items must list distinct list lengths, got {config.n_items}")
    prompts = [p for n in config.n_items for p in generate_prompts(vocab, n, config.n_prompts, seed=config.seed,
                                                                    templates=config.templates)]
    n_of = np.array([len(p.items) for p in prompts])
    conditions = [("baseline", ())] + ([("intervention", config.interventions)] if config.interventions else [])
    frames = []
    for name, edits in conditions:
        with rescaled_ov(model, edits, fold_norm=config.fold_norm):
            parts = [_run(model, [p for p in prompts if len(p.items) == n], config.batch_size) for n in config.n_items]
        out = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        frames.append(pd.DataFrame({
            "condition": name, "template": [p.template for p in prompts], "n_items": n_of,
            "text": [p.text for p in prompts], "target": [p.items[p.target] for p in prompts],
            **{k: v.numpy() for k, v in out.items()}}))
    per_prompt = pd.concat(frames, ignore_index=True)
    agg = dict(accuracy=("correct", "mean"), top1=("top1", "mean"), target_prob=("target_prob", "mean"),
               margin=("margin", "mean"), prompts=("correct", "size"))
    by_template = per_prompt.groupby(["condition", "n_items", "template"], sort=False).agg(**agg).reset_index()
    curve = per_prompt.groupby(["condition", "n_items"], sort=False).agg(**agg).reset_index()
    for t in (by_template, curve):
        t["chance"] = 1.0 / t["n_items"]
    return LaundryListResult(
        config=config, model_id=model.name, fingerprint=model.fingerprint(),
        tables={"curve": curve, "accuracy": by_template, "prompts": per_prompt},
        meta={"n_vocab": len(vocab)},
    )


ANALYSIS = Analysis(
    name="laundry_list",
    description="list-recall accuracy vs list length, before and after rescaling chosen OV components",
    config_cls=LaundryListConfig,
    result_cls=LaundryListResult,
    compute=compute_laundry_list,
    needs=("qkv", "values_mixed", "attn_write", "uniform_attention"),
    in_report=False,
)
