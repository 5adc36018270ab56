"""Measured effects: does the weight-based composition picture predict what the model does?

For each *writer* intervention (a whole head, or one SVD component of its OV circuit) we run the
user's prompts with that writer ablated (its output zeroed or replaced by its mean, or only the
chosen component's part of it) and measure, for every reader head in a later layer:

    Q: total-variation distance between the reader's clean attention pattern and the pattern it
       gets when only its *queries* come from the ablated run (keys clean),
    K: the same with only its *keys* from the ablated run (queries clean),
    V: relative change of the reader's output ||P (v' - v) W_O|| / ||P v W_O|| with only its
       *values* from the ablated run (pattern P clean).

This is activation patching of one reader input at a time; the ablated run's queries/keys/values
carry the writer's effect through every path (direct and through intermediate heads/MLPs).
Patterns are measured, not recomputed: a patched run overwrites every reader layer's queries,
keys and values (hooks before any q/k norm and rotary embedding) with the clean or the ablated
run's, and the model's own attention turns them into the pattern — so sliding windows,
soft-capping, ALiBi, attention multipliers, partial rotary and q/k norms are right by construction.
That the patch reaches the attention is checked on every run (a zeroed query must move the pattern).

Writers of many runs share one batched forward: the prompts are repeated once per writer and
each copy gets its own ablation; the patched runs of a chunk (Q, K and V copies) share another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..._progress import progress
from ...errors import InputError, UnsupportedModelError
from ...models import hook_names as hn
from ...results import Result
from .scores import KINDS
from .scores_streamed import stream_compositions
from .svd import FactoredSVD, HeadWeights, check_weights, head_weights, ov_svd
from ...engine.registry import Analysis
from ...models.contract import HookedSource

DEFAULT_PROMPTS = (
    "When Mary and John went to the store, John gave a drink to",
    "The cat sat on the mat because the mat was warm, and the dog sat on the",
    "I bought apples, bread, milk and eggs. At home I put the apples, the bread and the milk away, but I forgot the",
    "In 1969 the first people walked on the moon. The year the first people walked on the moon was",
)


@dataclass(frozen=True)
class HeadEffectsConfig:
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # texts the effects are measured on
    writers: tuple[tuple[int, int, int], ...] = ()  # (layer, head, component); component -1 = whole head; () = auto
    n_writers: int = 4  # auto: this many top writer heads (by composition score), each whole + its top component
    kinds: tuple[str, ...] = KINDS  # reader inputs to patch
    ablation: str = "zero"  # "zero" or "mean" (mean over the prompts' real positions)
    fold_norm: bool = True  # as in head_composition, for the weight scores
    batch_size: int = 32  # sequences per forward pass (writers x prompts are batched)


@dataclass(frozen=True)
class HeadEffectsResult(Result):
    """Tables: ``effects`` (writer x reader x kind: weight score, weight strength, measured effect),
    ``correlation`` (per kind and level: Pearson and Spearman between weight scores and effects)."""

    analysis = "head_effects"
    title = "Composition: weight scores vs measured effects"
    config_cls = HeadEffectsConfig

    @property
    def writers(self) -> list[tuple[int, int, int]]:
        """(layer, head, component) of every writer measured; component -1 = the whole head."""
        return [(int(l), int(h), int(c)) for l, h, c in self.meta["writers"]]

    @property
    def effects(self) -> pd.DataFrame:
        """One row per writer x reader x kind: weight score, weight strength, measured effect."""
        return self.tables["effects"]

    @property
    def correlation(self) -> pd.DataFrame:
        """Per kind and level: Pearson and Spearman between weight scores and measured effects."""
        return self.tables["correlation"]

    def summary(self) -> list[tuple[str, str]]:
        lines = [("model", self.model_id), ("prompts", str(len(self.config.prompts))),
                 ("writers", ", ".join(_label(*w) for w in self.writers))]
        for r in self.correlation.itertuples():
            lines.append((f"{r.kind} / {r.level}", f"Spearman {r.spearman:.2f}, Pearson {r.pearson:.2f} "
                          f"(strength: Spearman {r.spearman_strength:.2f}) over {r.n} pairs"))
        return lines


def _label(layer: int, head: int, component: int) -> str:
    return f"L{layer}H{head}" + ("" if component < 0 else f".c{component}")


def component_directions(model, writers, fold_norm: bool, *, hw: HeadWeights | None = None,
                         svd: FactoredSVD | None = None) -> dict[tuple[int, int, int], tuple[Tensor, Tensor]]:
    """For each component writer: (v_i [d_model] the written direction, w_i [d_head] with w_i^T W_O = v_i^T).

    ``hw`` / ``svd``: head weights (holding the writers' layers) and their OV SVD, when the caller has them."""
    out: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}
    layers = sorted({w[0] for w in writers if w[2] >= 0})
    if not layers:
        return out
    hw = head_weights(model, tuple(layers), fold_norm=fold_norm) if hw is None else hw
    svd = ov_svd(hw) if svd is None else svd
    for layer, head, comp in writers:
        if comp < 0:
            continue
        li = hw.layers.index(layer)
        v = svd.Vh[li, head, comp].double()  # [d_model]
        W_O = hw.W_O[li, head].double()  # [d_head, d_model]
        w = torch.linalg.pinv(W_O.T, rtol=1e-10) @ v  # W_O^T w = v (v lies in W_O's row space; W_O may be rank-deficient)
        out[(layer, head, comp)] = (v.float(), w.float())
    return out


def _ablation_hook(slices, model, directions, means):
    """hook_z edit: for each (batch slice, head, component) zero / mean-ablate the head or its component."""
    def hook(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        for sl, layer, head, comp in slices:
            if comp < 0:
                z[sl, :, head] = 0.0 if means is None else means[(layer, head)]
            else:
                v, w = directions[(layer, head, comp)]
                W_O = model.attention_weights(layer).W_O[head].to(z.dtype)  # [d_head, d_model]
                read = W_O @ v.to(z.device, z.dtype)  # z @ read: the component's coefficient (in z's dtype: bfloat16 too)
                coef = z[sl, :, head] @ read  # [b, pos]
                target = 0.0 if means is None else means[(layer, head)].to(z.dtype) @ read
                z[sl, :, head] = z[sl, :, head] - (coef - target)[..., None] * w.to(z.device, z.dtype)
        return z
    return hook


def _reader_names(layer: int) -> tuple[str, str, str]:
    """A layer's queries, keys and values as its projections make them (before q/k norms and rotary)."""
    return hn.attn_q(layer), hn.attn_k(layer), hn.attn_v(layer)


def _capture(model, ids, names, extra_hooks=()):
    """One forward pass with ``extra_hooks`` on; the activations at ``names``, keyed by those names."""
    store: dict[str, Tensor] = {}

    def keep(name):
        def hook(t, hook):  # keyed by the name we asked for: the bridge may report an alias
            store[name] = t.detach()
        return hook

    with model.hooks([*extra_hooks, *((n, keep(n)) for n in names)]):
        model(ids)
    missing = [n for n in names if n not in store]
    if missing:
        raise UnsupportedModelError(f"{model.name}'s hook point {missing[0]} never fires; measured head effects "
                                    "need each layer's queries, keys, values and pattern")
    return store


def _replace_with(source: Tensor):
    def hook(t, hook):
        return source.to(t.dtype)
    return hook


def _patched_patterns(model, ids, layers, sources: dict[str, Tensor]) -> dict[str, Tensor]:
    """One run whose reader inputs are overwritten by ``sources`` (name -> activation of the whole batch):
    the model's own patterns and z at every reader layer."""
    hooks = [(name, _replace_with(t)) for name, t in sources.items()]
    return _capture(model, ids, [n for l in layers for n in (hn.attn_pattern(l), hn.attn_z(l))], hooks)


def _check_patch_reaches(model, ids, layer: int, clean: dict[str, Tensor]) -> None:
    """The q hook must feed the attention (some bridges list hooks their forward never uses)."""
    q, k, v = _reader_names(layer)
    zeroed = {q: torch.zeros_like(clean[q]), k: clean[k], v: clean[v]}
    moved = _patched_patterns(model, ids, [layer], zeroed)[hn.attn_pattern(layer)]
    if (moved - clean[hn.attn_pattern(layer)]).abs().max() < 1e-7:
        raise UnsupportedModelError(f"patching {model.name}'s queries at {q} does not change its attention; "
                                    "measured head effects need hooks in the attention's path")


def _tv(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Mean total-variation distance between pattern rows over real query positions: [.., head]."""
    tv = 0.5 * (p - q).abs().sum(-1)  # [b, head, q_pos]
    m = mask[:, None, :].to(tv.dtype)
    return (tv * m).sum((0, 2)) / m.sum((0, 2))


@torch.no_grad()
def compute_head_effects(model: HookedSource, config: HeadEffectsConfig) -> HeadEffectsResult:
    check_weights(model)
    if not config.prompts:
        raise InputError("give at least one prompt to measure effects on")
    if config.ablation not in ("zero", "mean"):
        raise InputError(f"ablation must be 'zero' or 'mean', got {config.ablation!r}")
    kinds = tuple(k for k in KINDS if k in config.kinds)
    n_layers, n_heads = model.facts.n_layers, model.facts.n_heads
    # The weight side streams one layer at a time, as head_composition does: stacking every head's four matrices
    # in float32 (4 x layers x d_model^2 values) is 8.6 GB at 7B shapes and ~86 GB at 70B, beside the model itself.
    all_layers, all_heads = tuple(range(n_layers)), list(range(n_heads))
    streamed = stream_compositions(model, kinds, all_layers, all_layers, all_heads, all_heads, fold_norm=config.fold_norm)
    comps = streamed.comps
    writers = list(config.writers) or _auto_writers(comps, config.n_writers)
    for layer, head, comp in writers:
        if not (0 <= layer < n_layers - 1 and 0 <= head < n_heads and -1 <= comp < model.facts.d_head):
            raise InputError(f"writer {(layer, head, comp)} out of range: layer < {n_layers - 1}, head < {n_heads}, "
                             f"component in [-1, {model.facts.d_head})")
    ids, mask = model.to_tokens_batch(list(config.prompts))
    layers = list(range(min(w[0] for w in writers) + 1, n_layers))
    names = [n for layer in layers for n in _reader_names(layer)]
    z_names = [hn.attn_z(l) for l in sorted({w[0] for w in writers})] if config.ablation == "mean" else []
    clean = _capture(model, ids, sorted({*names, *(n for l in layers for n in (hn.attn_pattern(l), hn.attn_z(l))),
                                        *z_names}))  # one clean pass for everything
    _check_patch_reaches(model, ids, layers[0], clean)
    means = _z_means(clean, mask, writers) if config.ablation == "mean" else None
    directions = component_directions(model, writers, config.fold_norm)  # reads the component writers' layers only
    W_O = {l: model.effective_attention_weights(l).W_O for l in layers}  # what a head's output writes
    P = ids.shape[0]
    per_chunk = max(1, config.batch_size // (P * len(kinds)))
    rows = []
    for start in progress(range(0, len(writers), per_chunk), desc="ablating writers"):
        chunk = writers[start:start + per_chunk]
        hooks = []
        for layer in sorted({w[0] for w in chunk}):
            slices = [(slice(i * P, (i + 1) * P), *w) for i, w in enumerate(chunk) if w[0] == layer]
            hooks.append((hn.attn_z(layer), _ablation_hook(slices, model, directions, means)))
        n = len(chunk)
        abl = _capture(model, ids.repeat(n, 1), names, hooks)
        # Patched runs: for each kind one copy of the chunk, its reader input from the ablated run, the rest clean.
        sources = {}
        for layer in layers:
            for kind, name in zip("QKV", _reader_names(layer)):
                rep = clean[name].repeat(n, *([1] * (clean[name].ndim - 1)))
                sources[name] = torch.cat([abl[name] if kind == k else rep for k in kinds])
        patched = _patched_patterns(model, ids.repeat(n * len(kinds), 1), layers, sources)
        for i, writer in enumerate(chunk):
            for layer in layers:
                if layer <= writer[0]:
                    continue
                effects = _effects(clean, patched, layer, kinds, [slice((j * n + i) * P, (j * n + i + 1) * P)
                                                                   for j in range(len(kinds))], mask, W_O[layer])
                for kind, values in effects.items():
                    for head, value in enumerate(values.tolist()):
                        rows.append((*writer, layer, head, kind, value))
    table = pd.DataFrame(rows, columns=["writer_layer", "writer_head", "component", "reader_layer", "reader_head", "kind", "effect"])
    table = _attach_scores(table, comps, streamed.sv_ov.cpu())
    return HeadEffectsResult(
        config=config, model_id=model.name, fingerprint=model.fingerprint(),
        tables={"effects": table, "correlation": _correlations(table)},
        meta={"writers": [list(w) for w in writers], "ablation": config.ablation, "measured": "patched hooks"},
    )


def _effects(clean, patched, layer: int, kinds, slices, mask, W_O) -> dict[str, Tensor]:
    """Per reader head of one layer: Q / K pattern change (TV) and V relative output change, from the
    model's own patterns and z in the patched copies ``slices`` (one per kind, in ``kinds`` order)."""
    pattern, z = hn.attn_pattern(layer), hn.attn_z(layer)
    out = {}
    for kind, sl in zip(kinds, slices):
        if kind in "QK":
            out[kind] = _tv(patched[pattern][sl], clean[pattern], mask)
        else:  # the pattern is clean here: z' - z = P (v' - v)
            out[kind] = _write_norm(patched[z][sl] - clean[z], mask, W_O) / _write_norm(clean[z], mask, W_O).clamp_min(1e-30)
    return out


def _write_norm(z: Tensor, mask: Tensor, W_O: Tensor) -> Tensor:
    """Per head: the norm of what ``z`` writes through ``W_O`` [head, d_head, d_model], over the masked positions."""
    m = mask[:, :, None, None].to(torch.float32)
    return torch.einsum("bqhd,hde->bqhe", z.float() * m, W_O.float()).square().sum((0, 1, 3)).sqrt()


def _z_means(cache: dict[str, Tensor], mask, writers) -> dict[tuple[int, int], Tensor]:
    """Each writer head's mean ``hook_z`` over the real positions of the clean run (``cache``)."""
    m = mask[:, :, None, None].to(torch.float32)
    out = {}
    for layer, head, _ in writers:
        z = cache[hn.attn_z(layer)]
        out[(layer, head)] = ((z * m).sum((0, 1)) / m.sum((0, 1)))[head]  # [d_head]
    return out


def _auto_writers(comps, n: int) -> list[tuple[int, int, int]]:
    """The ``n`` writer heads with the largest composition score of any kind, whole and top component."""
    best = torch.stack([c.head.amax(dim=(2, 3)) for c in comps.values()]).amax(0)  # [layer, head]
    order = best.flatten().argsort(descending=True)[:n].tolist()
    out = []
    for flat in order:
        layer, head = divmod(flat, best.shape[1])
        kind = max(comps, key=lambda k: float(comps[k].head[layer, head].max()))
        share = comps[kind].share_of(layer)[head]  # [comp, rl, rh]; one writer row, not the scores' size again
        reader = int(comps[kind].head[layer, head].flatten().argmax())
        top = int(share.flatten(1)[:, reader].argmax())
        out += [(layer, head, -1), (layer, head, top)]
    return out


def _attach_scores(table: pd.DataFrame, comps, s: Tensor) -> pd.DataFrame:
    """``s``: the OV singular values of every head, [layer, head, comp], on the CPU."""
    score, strength = np.zeros(len(table)), np.zeros(len(table))
    cols = [table[c].to_numpy() for c in ("writer_layer", "writer_head", "component", "reader_layer", "reader_head")]
    for kind in table.kind.unique():
        sel = (table.kind == kind).to_numpy()
        wl, wh, c, rl, rh = (col[sel] for col in cols)
        whole = comps[kind].head.cpu()[wl, wh, rl, rh].numpy()
        comp = comps[kind].component.cpu()[wl, wh, np.maximum(c, 0), rl, rh].numpy()
        sv, norm = s[wl, wh, np.maximum(c, 0)].numpy(), s[wl, wh].norm(dim=-1).numpy()
        score[sel] = np.where(c < 0, whole, comp)
        strength[sel] = np.where(c < 0, whole * norm, comp * sv)  # ||L R||_F / ||R||_F: scales with the writer
    return table.assign(weight_score=score, weight_strength=strength)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(pd.Series(a).rank().corr(pd.Series(b).rank())) if len(a) > 2 else float("nan")


def _correlations(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind in table.kind.unique():
        for level, sel in (("head", table.component < 0), ("component", table.component >= 0)):
            t = table[(table.kind == kind) & sel]
            if len(t) < 3:
                continue
            rows.append({"kind": kind, "level": level, "n": len(t),
                         "pearson": float(t.weight_score.corr(t.effect)),  # NaN (no warning) if constant
                         "spearman": _spearman(t.weight_score.to_numpy(), t.effect.to_numpy()),
                         "spearman_strength": _spearman(t.weight_strength.to_numpy(), t.effect.to_numpy())})
    return pd.DataFrame(rows)


ANALYSIS = Analysis(
    name="head_effects",
    description="ablate writer heads / OV components on prompts; reader Q/K/V effects beside weight-based composition scores",
    config_cls=HeadEffectsConfig,
    result_cls=HeadEffectsResult,
    compute=compute_head_effects,
    needs=("qkv", "values_mixed", "pattern", "attn_write", "residual", "head_writes", "uniform_attention"),
    in_report=False,
)
