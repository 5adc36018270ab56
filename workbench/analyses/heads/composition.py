"""The "head_composition" analysis: SVD of every head, Q/K/V composition whole-head and per
writer component, with a random-matrix null baseline. Maths in ``svd`` and ``scores``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import SupportsIndex

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ...errors import InputError
from ...results import Result
from ...types import ComponentScores, HeadScores, HeadSpectra, NullScores
from .scores import KINDS, Composition, null_scores
from .scores_streamed import rotated_null_streamed, stream_compositions
from .svd import _chosen_layers, check_weights, spectrum_stats
from ...engine.registry import Analysis
from ...models.facts import layer_span
from ...models.contract import WeightSource


@dataclass(frozen=True)
class HeadCompositionConfig:
    kinds: tuple[str, ...] = KINDS  # which of Q-, K-, V-composition to score
    writer_layers: tuple[int, ...] | None = None  # layers of the writer heads (None: all)
    reader_layers: tuple[int, ...] | None = None  # layers of the reader heads (None: all); only later layers pair up
    writer_heads: tuple[int, ...] | None = None  # head indices kept on the writer side (None: all)
    reader_heads: tuple[int, ...] | None = None  # head indices kept on the reader side (None: all)
    fold_norm: bool = True  # fold each reader's pre-attention norm gain into W_Q/W_K/W_V
    null_samples: int = 128  # random writer and reader heads each: null = all n x n random pairs
    seed: int = 0  # seed of the null baseline
    table_pairs: int = 100  # per kind, how many top pairs get a per-component breakdown table
    table_components: int = 8  # components listed per pair in that table


@dataclass(frozen=True)
class HeadCompositionResult(Result):
    """Tables: ``pairs`` (one row per writer head x later reader head x kind, best first),
    ``components`` (per-component breakdown of the top pairs), ``spectra`` (per head and circuit),
    ``null`` (score quantiles of two nulls: ``gaussian`` = random matrices with the same shapes and
    norms; ``rotated`` = real writers with their output space randomly rotated, against real readers).

    Tensors: ``component/<kind>`` [w_layer, w_head, comp, r_layer, r_head] per-component scores,
    ``head/<kind>`` [w_layer, w_head, r_layer, r_head] whole-head scores (rows/columns follow
    ``meta`` writer/reader layers and heads; zero unless the reader's layer is later),
    ``sv/OV``, ``sv/QK`` [layer, head, d_head] singular values of every head (all layers),
    ``null/<kind>``, ``null_rotated/<kind>`` whole-head scores of the random pairs.
    """

    analysis = "head_composition"
    title = "Attention-head composition (talking heads)"
    config_cls = HeadCompositionConfig

    # --------------------------------------------------------------- contents
    @property
    def kinds(self) -> list[str]:
        """The composition kinds scored, of Q, K, V."""
        return list(self.meta["kinds"])

    @property
    def writer_layers(self) -> list[int]:
        """Layers of the writer heads: the rows of :meth:`head_scores` (dimension ``w_layer``)."""
        return list(self.meta["writer_layers"])

    @property
    def writer_heads(self) -> list[int]:
        return list(self.meta["writer_heads"])

    @property
    def reader_layers(self) -> list[int]:
        return list(self.meta["reader_layers"])

    @property
    def reader_heads(self) -> list[int]:
        return list(self.meta["reader_heads"])

    @property
    def norm_folded(self) -> bool:
        """Whether the readers' pre-attention norm gains were folded into their weights."""
        return bool(self.meta["norm_folded"])

    @property
    def heads_per_kv(self) -> int:
        """Query heads sharing one key/value head (grouped-query attention)."""
        return int(self.meta["heads_per_kv"])

    @property
    def skipped_layers(self) -> dict[int, str]:
        """Layers left out because they have no attention heads (a hybrid's linear-attention or convolution
        layers), with the reason; empty for a model whose every layer has heads."""
        return {int(l): str(why) for l, why in self.meta.get("skipped_layers", {}).items()}

    @property
    def concentration(self) -> dict[str, str]:
        """Per kind, how concentrated composition is in few components (text)."""
        return dict(self.meta["concentration"])

    @property
    def pairs(self) -> pd.DataFrame:
        """One row per writer head x later reader head x kind, best first."""
        return self.tables["pairs"]

    @property
    def spectra(self) -> pd.DataFrame:
        """Spectrum statistics per head and circuit."""
        return self.tables["spectra"]

    @property
    def null_quantiles(self) -> pd.DataFrame:
        """Score quantiles of the Gaussian and the rotated null (empty without null samples)."""
        return self.tables["null"]

    def head_scores(self, kind: str) -> HeadScores:
        """Whole-head scores (zero unless the reader's layer is later)."""
        return self.tensors[f"head/{kind}"]

    def component_scores(self, kind: str) -> ComponentScores:
        """Scores with the writer's OV replaced by one rank-1 SVD component."""
        return self.tensors[f"component/{kind}"]

    def singular_values(self, circuit: str) -> HeadSpectra:
        """Singular values of every head's ``"OV"`` or ``"QK"`` circuit (all layers, not only those scored)."""
        return self.tensors[f"sv/{circuit}"]

    def null_scores(self, kind: str, *, rotated: bool = False) -> NullScores | None:
        """Whole-head scores of random pairs: Gaussian matrices, or (``rotated``) real writers randomly
        rotated; None when no null was drawn."""
        return self.tensors.get(f"{'null_rotated' if rotated else 'null'}/{kind}")

    def _index(self, side: str, layer: int, head: int) -> tuple[int, int]:
        layers, heads = (self.writer_layers, self.writer_heads) if side == "writer" else (self.reader_layers, self.reader_heads)
        if layer not in layers or head not in heads:
            raise InputError(f"{side} head L{layer}H{head} was not scored (layers {layers}, heads {heads})")
        return layers.index(layer), heads.index(head)

    def shares(self, kind: str) -> ComponentScores:
        """Fraction of ||OV_A R_B||^2 in each writer component."""
        s = self.singular_values("OV")[self.writer_layers][:, self.writer_heads]
        weighted = (s[..., None, None] * self.component_scores(kind)).square()
        return weighted / weighted.sum(2, keepdim=True).clamp_min(1e-30)

    def breakdown(self, writer: tuple[SupportsIndex, SupportsIndex], reader: tuple[SupportsIndex, SupportsIndex],
                  kind: str) -> pd.DataFrame:
        """One row per component of the writer's OV: singular value, score and share for this pair. ``writer`` /
        ``reader``: (layer, head), ints or NumPy ints as read from :attr:`pairs`."""
        writer, reader = (int(writer[0]), int(writer[1])), (int(reader[0]), int(reader[1]))
        wi, whi = self._index("writer", *writer)
        ri, rhi = self._index("reader", *reader)
        comp = self.component_scores(kind)[wi, whi, :, ri, rhi]
        s = self.singular_values("OV")[writer[0], writer[1]]
        weighted = (s * comp).square()  # as in :meth:`shares`, for this one pair only
        share = weighted / weighted.sum().clamp_min(1e-30)
        return pd.DataFrame({"component": np.arange(len(comp)), "singular_value": s.numpy(),
                             "score": comp.numpy(), "share": share.numpy()})

    def component_frame(self, kind: str | None = None, *, min_score: float = 0.0,
                        writer_layers: tuple[int, ...] | None = None, reader_layers: tuple[int, ...] | None = None) -> pd.DataFrame:
        """The full tidy per-component table, built from the tensors: one row per writer component x
        later reader x kind (writer layer, head, component, reader layer, head, kind, score, share),
        filtered by ``min_score`` and layers. Unfiltered on a 30-layer model it has millions of rows."""
        frames = []
        for k in ([kind] if kind else self.kinds):
            comp, share = self.component_scores(k), self.shares(k)
            wl = np.array(self.writer_layers)[:, None, None, None, None]
            rl = np.array(self.reader_layers)[None, None, None, :, None]
            keep = (wl < rl) & (comp.numpy() >= min_score)
            if writer_layers is not None:
                keep &= np.isin(wl, writer_layers)
            if reader_layers is not None:
                keep &= np.isin(rl, reader_layers)
            i = np.nonzero(keep)
            frames.append(pd.DataFrame({
                "writer_layer": np.array(self.writer_layers)[i[0]], "writer_head": np.array(self.writer_heads)[i[1]],
                "component": i[2], "reader_layer": np.array(self.reader_layers)[i[3]],
                "reader_head": np.array(self.reader_heads)[i[4]], "kind": k,
                "score": comp.numpy()[i], "share": share.numpy()[i]}))
        return pd.concat(frames, ignore_index=True).sort_values("score", ascending=False, ignore_index=True)

    def layer_matrix(self, kind: str) -> np.ndarray:
        """[writer layer, reader layer]: the largest whole-head score over head pairs (NaN: no pair)."""
        m = self.head_scores(kind).amax(dim=(1, 3)).numpy().astype(float)
        wl, rl = np.array(self.writer_layers), np.array(self.reader_layers)
        m[~(wl[:, None] < rl[None, :])] = np.nan
        return m

    def null_quantile(self, kind: str, level: str = "head", q: str = "q99", null: str = "gaussian") -> float:
        table = self.null_quantiles
        return float(table[(table.null == null) & (table.kind == kind) & (table.level == level)][q].iloc[0])

    # ---------------------------------------------------------- presentation
    def summary(self) -> list[tuple[str, str]]:
        lines = [("model", self.model_id)]
        pairs = self.pairs
        for kind in self.kinds:
            top = pairs[pairs.kind == kind].head(1)
            if top.empty:
                continue
            r = top.iloc[0]
            lines.append((f"top {kind}-composition",
                          f"L{r.writer_layer}H{r.writer_head} -> L{r.reader_layer}H{r.reader_head}: {r.score:.3f} "
                          f"({r.vs_null:.1f}x Gaussian-null q99, {r.get('vs_rotated', float('nan')):.1f}x rotated-null q99; "
                          f"component {r.top_component} carries {r.top_share:.0%})"))
        lines.extend(self.concentration.items())
        if skipped := self.skipped_layers:
            lines.append(("layers skipped", "; ".join(f"{layer_span(ls)} ({why})" for why, ls in _by_reason(skipped))))
        lines.append(("norm gain folded", str(self.norm_folded)))
        lines.append(("grouped-query", f"{self.heads_per_kv} query heads per key/value head; scores per query head"))
        return lines


def _by_reason(skipped: dict[int, str]) -> list[tuple[str, list[int]]]:
    groups: dict[str, list[int]] = {}
    for layer, why in sorted(skipped.items()):
        groups.setdefault(why, []).append(layer)
    return list(groups.items())


# ------------------------------------------------------------------ compute
def _head_index(n: int, heads: tuple[int, ...] | None) -> list[int] | None:
    """Sorted distinct head indices, checked; None (all heads) stays None."""
    if heads is None:
        return None
    idx = sorted({int(h) for h in heads})
    if not idx or idx[0] < 0 or idx[-1] >= n:
        raise InputError(f"head indices must lie in [0, {n}), got {heads}")
    return idx


def _grid(*sizes: int) -> list[np.ndarray]:
    return [g.ravel() for g in np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")]


def _pairs_table(comps, w_layers, w_heads, r_layers, r_heads, null_q99, null_comp_q99, rotated_q99) -> pd.DataFrame:
    """One row per writer head x later reader head x kind; built one writer layer at a time, so that nothing
    of the per-component scores' size is allocated beside them."""
    frames = []
    for kind, comp in comps.items():
        for i, w_layer in enumerate(w_layers):
            later = [j for j, r in enumerate(r_layers) if r > w_layer]
            if not later:
                continue
            nc = comp.component.shape[2]
            share = comp.share_of(i)[:, :, later].permute(0, 2, 3, 1).reshape(-1, nc)  # [pairs, comp]
            per_comp = comp.component[i][:, :, later].permute(0, 2, 3, 1).reshape(-1, nc)  # [pairs, comp]
            score = comp.head[i][:, later].reshape(-1).numpy()
            ordered = share.sort(dim=-1, descending=True)
            cum = ordered.values.cumsum(-1)
            wh, rl, rh = _grid(len(w_heads), len(later), len(r_heads))
            frames.append(pd.DataFrame({
                "writer_layer": w_layer, "writer_head": np.array(w_heads)[wh],
                "reader_layer": np.array(r_layers)[later][rl], "reader_head": np.array(r_heads)[rh],
                "kind": kind, "score": score,
                "vs_null": score / null_q99[kind],  # / q99 of Gaussian matrices
                "vs_rotated": score / rotated_q99[kind],  # / q99 of randomly rotated real writers
                "top_component": ordered.indices[:, 0].numpy(), "top_share": ordered.values[:, 0].numpy(),
                "top2_share": cum[:, min(1, cum.shape[1] - 1)].numpy(),
                "components_90": (cum < 0.9).sum(-1).numpy() + 1,
                "best_component_score": per_comp.amax(-1).numpy(),  # the paper's point: often >> the whole-head score
                "components_above_null": (per_comp > null_comp_q99[kind]).sum(-1).numpy(),
            }))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values("score", ascending=False, ignore_index=True)


def _components_table(pairs, comps, sv_ov, meta, n_pairs: int, n_comp: int) -> pd.DataFrame:
    rows = []
    pos = {side: ({l: i for i, l in enumerate(meta[f"{side}_layers"])}, {h: i for i, h in enumerate(meta[f"{side}_heads"])})
           for side in ("writer", "reader")}
    for kind in comps:
        comp = comps[kind]
        for r in pairs[pairs.kind == kind].head(n_pairs).itertuples():
            wi, whi = pos["writer"][0][r.writer_layer], pos["writer"][1][r.writer_head]
            ri, rhi = pos["reader"][0][r.reader_layer], pos["reader"][1][r.reader_head]
            weighted = (comp.writer_s[wi, whi] * comp.component[wi, whi, :, ri, rhi]).square()  # as Composition.share_of
            share = weighted / weighted.sum().clamp_min(1e-30)
            for c in share.argsort(descending=True)[:n_comp].tolist():
                rows.append({"writer_layer": r.writer_layer, "writer_head": r.writer_head, "component": c,
                             "singular_value": float(sv_ov[r.writer_layer, r.writer_head, c]),
                             "reader_layer": r.reader_layer, "reader_head": r.reader_head, "kind": kind,
                             "score": float(comp.component[wi, whi, c, ri, rhi]), "share": float(share[c])})
    return pd.DataFrame(rows)


def _spectra_table(sv: dict[str, Tensor], layers: list[int]) -> pd.DataFrame:
    """Spectrum statistics per head of ``layers`` (the attention layers) and circuit."""
    frames = []
    for circuit, s in sv.items():
        stats = spectrum_stats(s[layers])
        layer, head = _grid(len(layers), s.shape[1])
        frames.append(pd.DataFrame({"layer": np.array(layers)[layer], "head": head, "circuit": circuit,
                                    **{k: v.reshape(-1).numpy() for k, v in stats.items()}}))
    return pd.concat(frames, ignore_index=True)


def _attention_layers(model: WeightSource, layers: tuple[int, ...] | None) -> tuple[int, ...]:
    """The chosen layers (default: every attention layer), refusing one without attention heads by name."""
    attention = model.facts.attention_layers
    if layers is None:
        return tuple(attention)
    chosen = _chosen_layers(model.facts.n_layers, layers)
    if without := [l for l in chosen if l not in attention]:
        kinds = " / ".join(sorted({model.facts.layers[l].kind for l in without}))
        raise InputError(f"{model.name} has no attention heads to compose in layers {layer_span(without)} ({kinds}); "
                         f"choose among its attention layers {layer_span(attention)}")
    return chosen


def _skipped(model: WeightSource) -> dict[int, str]:
    """Layers without attention heads (a hybrid's), and why: composition is defined between heads."""
    return {l: f"{f.kind}: no attention heads" for l, f in enumerate(model.facts.layers) if not f.attention}


def _null_table(nulls: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, null in nulls.items():
        rows += [{"null": name, **row} for row in _null_rows(null)]
    return pd.DataFrame(rows, columns=["null", "kind", "level", "mean", "std", "q50", "q95", "q99", "max"])


def _sampled_quantiles(values: Tensor) -> tuple[Tensor, Tensor]:
    """(the values as float64 on the CPU, their q50 / q95 / q99 over a seeded sample of at most 2^20). The nulls
    are drawn on the model's device; the quantile levels and the sample's indices live on the CPU, so the values
    come to them (torch.quantile wants its input and levels on one device)."""
    v = values.detach().reshape(-1).to("cpu", torch.float64)
    sample = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:2**20]]
    return v, torch.quantile(sample, torch.tensor([0.5, 0.95, 0.99], dtype=torch.float64))


def _null_rows(null) -> list[dict]:
    rows = []
    for kind, comp in null.items():
        for level, values in (("head", comp.head), ("component", comp.component)):
            v, q = _sampled_quantiles(values)
            rows.append({"kind": kind, "level": level, "mean": float(v.mean()), "std": float(v.std()),
                         "q50": float(q[0]), "q95": float(q[1]), "q99": float(q[2]), "max": float(v.max())})
    return rows


def _concentration(pairs: pd.DataFrame, n: int) -> dict[str, str]:
    out = {}
    for kind, rows in pairs.groupby("kind", sort=False):
        top, rest = rows.head(n), rows
        ratio = lambda t: (t.best_component_score / t.score.clip(lower=1e-30)).median()  # noqa: E731
        out[f"{kind}: top-{len(top)} pairs"] = (
            f"median top-1 component share {top.top_share.median():.0%}, top-2 {top.top2_share.median():.0%} "
            f"(all pairs: {rest.top_share.median():.0%} / {rest.top2_share.median():.0%}); "
            f"best component score / whole-head score {ratio(top):.1f}x (all pairs {ratio(rest):.1f}x); "
            f"{(top.components_90 <= 2).mean():.0%} need <= 2 components for 90%; "
            f"pairs above q99 of the Gaussian null {(rest.vs_null > 1).mean():.0%}, "
            f"of the rotated null {(rest.vs_rotated > 1).mean():.1%}")
    return out


@torch.no_grad()
def compute_head_composition(model: WeightSource, config: HeadCompositionConfig) -> HeadCompositionResult:
    check_weights(model)
    kinds = tuple(dict.fromkeys(config.kinds))
    if not kinds or set(kinds) - set(KINDS):
        raise InputError(f"kinds must be a non-empty subset of {KINDS}, got {config.kinds}")
    n_layers, n_heads = model.facts.n_layers, model.facts.n_heads
    w_layers, r_layers = (_attention_layers(model, layers) for layers in (config.writer_layers, config.reader_layers))
    w_idx, r_idx = _head_index(n_heads, config.writer_heads), _head_index(n_heads, config.reader_heads)
    w_heads, r_heads = (list(range(n_heads)) if i is None else i for i in (w_idx, r_idx))
    if not any(a < b for a in w_layers for b in r_layers):
        raise InputError(f"no reader layer comes after a writer layer (writers {w_layers}, readers {r_layers})")
    # one layer's weights at a time (heads/scores_streamed.py): a 7B model's all-pairs fit in a few GB
    streamed = stream_compositions(model, kinds, w_layers, r_layers, w_heads, r_heads, fold_norm=config.fold_norm)
    comps = {k: Composition(c.component.cpu(), c.head.cpu(), c.writer_s.cpu()) for k, c in streamed.comps.items()}
    sv = {"OV": streamed.sv_ov, "QK": streamed.sv_qk}
    null, rotated = ({}, {}) if config.null_samples < 2 else (  # no null drawn
        null_scores(streamed.norms, kinds, config.null_samples, config.seed),
        rotated_null_streamed(model, kinds, config.null_samples, config.seed + 1, fold_norm=config.fold_norm))
    null, rotated = ({k: Composition(c.component.cpu(), c.head.cpu(), c.writer_s.cpu()) for k, c in drawn.items()}
                     for drawn in (null, rotated))  # drawn on the model's device; the tables and the result are CPU
    null_tab = _null_table({"gaussian": null, "rotated": rotated} if null else {})

    def q99_of(name: str, level: str) -> dict[str, float]:
        t = null_tab[(null_tab.null == name) & (null_tab.level == level)].set_index("kind")["q99"]
        return {k: float(t.get(k, float("nan"))) for k in kinds}

    q99, q99c, q99r = q99_of("gaussian", "head"), q99_of("gaussian", "component"), q99_of("rotated", "head")
    meta = {"kinds": list(kinds), "writer_layers": list(w_layers), "writer_heads": w_heads,
            "reader_layers": list(r_layers), "reader_heads": r_heads, "norm_folded": streamed.norm_folded,
            "heads_per_kv": streamed.heads_per_kv, "n_layers": n_layers, "n_heads": n_heads,
            "skipped_layers": _skipped(model)}
    pairs = _pairs_table(comps, w_layers, w_heads, r_layers, r_heads, q99, q99c, q99r)
    meta["concentration"] = _concentration(pairs, config.table_pairs)
    tensors = {"sv/OV": sv["OV"], "sv/QK": sv["QK"]}
    for k, c in comps.items():
        tensors[f"component/{k}"] = c.component.float().contiguous()
        tensors[f"head/{k}"] = c.head.float().contiguous()
    for k, c in null.items():
        tensors[f"null/{k}"] = c.head.reshape(-1).float()
    for k, c in rotated.items():
        tensors[f"null_rotated/{k}"] = c.head.reshape(-1).float()
    return HeadCompositionResult(
        config=config, model_id=model.name, fingerprint=model.fingerprint(), tensors=tensors,
        tables={"pairs": pairs,
                "components": _components_table(pairs, comps, sv["OV"], meta, config.table_pairs, config.table_components),
                "spectra": _spectra_table(sv, model.facts.attention_layers), "null": null_tab},
        meta=meta,
    )


ANALYSIS = Analysis(
    name="head_composition",
    description="SVD of every head's OV/QK circuit; Q/K/V composition whole-head and per writer SVD component, vs a random null",
    config_cls=HeadCompositionConfig,
    result_cls=HeadCompositionResult,
    compute=compute_head_composition,
    needs=("qkv", "values_mixed", "attn_write", "uniform_heads"),
)
