"""Head composition of every pair, reading one layer's attention weights at a time.

Holding every head's weights at once (4 x layers x d_model^2 values: 8.6 GB in float32 for a 7B model) is
what limits composition by memory, not the result. Here layers are streamed: in pass order, a layer is
first a reader — its read matrices (``composition.read_matrices``) meet the output directions of the
earlier writers held — and then a writer whose OV directions are kept. The writers held are bounded by
``WRITER_BLOCK_BYTES``: a model whose writers exceed it is done in blocks of writer layers, each block
streaming the later layers again (reading weights twice costs little next to the products). The first
pass also keeps everything small that the result needs of every layer: singular values and per-head norms for
the Gaussian null. The rotated null's real heads (:func:`rotated_null_streamed`) are read afterwards from their
layers, not kept through the stream (at 7B, 2 x 128 heads' four matrices are 2 GB).

Peak memory: the result (per-component scores, ``layers^2 heads^2 d_head`` values per kind: 1.6 GB at 7B) plus
one block of writers plus a layer's weights and its float64 factorisations a few heads at a time — never the
stack of all weights; freed pages are handed back after every layer (``_memory.release_freed``). The nulls
after it hold the 128 writers' output directions and one layer or one matrix of heads. Works the same on a loaded model and on
``wb.load_weights`` (which reads each layer from the shards when asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..._memory import release_freed
from ..._progress import progress
from .scores import (Composition, HeadNorms, Reach, normal_draws, read_matrices, rotated_picks, scores_from_reach,
                          writer_directions)
from .svd import HeadWeights, head_weights, svd_from_r, take

WRITER_BLOCK_BYTES = 512 * 2**20  # OV output directions of the writers held at once (float32)


@dataclass
class Streamed:
    """What :func:`stream_compositions` returns: scores per kind and the per-layer summaries."""

    comps: dict[str, Composition]
    sv_ov: Tensor  # [layer, head, d_head] every head's OV singular values
    sv_qk: Tensor  # [layer, head, d_head]
    norms: HeadNorms  # for the Gaussian null
    heads_per_kv: int
    norm_folded: bool


def _blocks(layers: list[int], per_layer_bytes: int) -> list[list[int]]:
    size = max(1, WRITER_BLOCK_BYTES // max(per_layer_bytes, 1))
    return [layers[i:i + size] for i in range(0, len(layers), size)]


HEAD_CHUNK = 8  # heads whose float64 factorisations are formed at once (7B: 8 x 4096 x 128 x 8 B = 34 MB each)


def _ov_parts(w: HeadWeights, vh_heads: list[int] | None) -> tuple[Tensor, Tensor | None]:
    """``ov_svd(w)``'s S [head, comp] of one layer's heads and its Vh [len(vh_heads), comp, d_model] of ``vh_heads``
    (equal values), a few heads at a time and without U: ov_svd of a whole 7B layer holds ~0.7 GB of float64."""
    s_all, vh_all = [], []
    for j in range(0, w.n_heads, HEAD_CHUNK):
        heads = list(range(j, min(j + HEAD_CHUNK, w.n_heads)))
        keep = [h for h in heads if vh_heads is not None and h in vh_heads]
        r_v = torch.linalg.qr(w.W_V[0, j:j + len(heads)].double(), mode="r")[1]
        s, vh = svd_from_r(r_v, w.W_O[0, j:j + len(heads)], right=bool(keep))
        s_all.append(s)
        if keep and vh is not None:  # (svd_from_r gives Vh when asked: right=bool(keep))
            vh_all.append(vh[[h - j for h in keep]])
    return torch.cat(s_all), (torch.cat(vh_all) if vh_heads else None)


def _qk_values(w: HeadWeights) -> Tensor:
    """``qk_svd(w).S[0]`` (equal values), a few heads at a time, without the singular vectors."""
    out = []
    for j in range(0, w.n_heads, HEAD_CHUNK):
        r_q = torch.linalg.qr(w.W_Q[0, j:j + HEAD_CHUNK].double(), mode="r")[1]
        out.append(svd_from_r(r_q, w.W_K[0, j:j + HEAD_CHUNK].mT, right=False)[0])
    return torch.cat(out)


def _read_columns(w: HeadWeights, kind: str, heads: list[int]) -> tuple[Tensor, Tensor]:
    """The read matrices of ``heads`` side by side [d_model, len(heads) * d_head] and their Frobenius norms, filled a
    few heads at a time (equal to ``read_matrices(w, kind)[0][heads]``, without its float64 copy of the layer)."""
    d_model, d_head = w.W_Q.shape[-2], w.W_Q.shape[-1]
    cols = torch.empty(d_model, len(heads) * d_head, dtype=w.W_Q.dtype, device=w.W_Q.device)
    norms = torch.empty(len(heads), dtype=w.W_Q.dtype, device=w.W_Q.device)
    for j in range(0, len(heads), HEAD_CHUNK):
        read = read_matrices(take(w, [0], heads[j:j + HEAD_CHUNK]), kind)[0]  # [chunk, d_model, d_head]
        norms[j:j + len(read)] = read.flatten(-2).norm(dim=-1)
        cols[:, j * d_head:(j + len(read)) * d_head] = read.permute(1, 0, 2).reshape(d_model, -1)
    return cols, norms


def _gather(picks: Tensor, n_heads: int, layers: list[int]) -> dict[int, list[tuple[int, int]]]:
    """layer -> [(position in the pick list, head)] for flat indices over ``layers`` x heads."""
    out: dict[int, list[tuple[int, int]]] = {}
    for pos, flat in enumerate(picks.tolist()):
        out.setdefault(layers[flat // n_heads], []).append((pos, flat % n_heads))
    return out


@torch.no_grad()
def stream_compositions(model, kinds: tuple[str, ...], writer_layers: tuple[int, ...], reader_layers: tuple[int, ...],
                        writer_heads: list[int], reader_heads: list[int], *, fold_norm: bool) -> Streamed:
    """All kinds of composition between the chosen writer and (later) reader heads, streaming the attention layers
    (every layer, except in a hybrid). ``sv_ov`` / ``sv_qk`` have a row for every layer: NaN where it has no heads."""
    n_layers = model.facts.n_layers
    attention = model.facts.attention_layers
    w_index, r_index = {l: i for i, l in enumerate(writer_layers)}, {l: i for i, l in enumerate(reader_layers)}
    wh, rh = len(writer_heads), len(reader_heads)
    sv_ov: list[Tensor] = []
    sv_qk: list[Tensor] = []
    norms: list[Tensor] = []
    shapes: tuple[tuple[int, int], ...] = ()
    w: HeadWeights | None
    cols: Tensor | None
    proj: Tensor | None
    reach: dict[str, Tensor] = {}
    read_norm: dict[str, Tensor] = {}
    writer_s: Tensor | None = None
    heads_per_kv, folded = 1, fold_norm
    blocks = _blocks(list(writer_layers), wh * model.facts.d_head * model.facts.d_model * 4)
    last_reader = max(reader_layers)
    passes = [attention if b == 0 else [l for l in attention if block[0] <= l <= last_reader]
              for b, block in enumerate(blocks)]
    steps = progress(total=sum(map(len, passes)), desc="composition")
    for b, block in enumerate(blocks):
        held: dict[int, Tensor] = {}  # writer layer -> its heads' output directions [wh * comp, d_model]
        for layer in passes[b]:
            w = head_weights(model, (layer,), fold_norm=fold_norm)  # one layer: [1, head, ...]
            ov_s, ov_vh = _ov_parts(w, writer_heads if layer in block else None) if (b == 0 or layer in block) else (None, None)
            if b == 0:  # what the result needs of every layer, once
                assert ov_s is not None  # (every layer's parts are computed in the first block)
                sv_ov.append(ov_s.cpu())
                sv_qk.append(_qk_values(w).cpu())
                head_norms = HeadNorms.of(w)
                norms.append(head_norms.norms)
                shapes = head_norms.shapes
                heads_per_kv = w.heads_per_kv
                folded = folded and w.norm_folded
            earlier = [l for l in held if l < layer]
            if layer in r_index and earlier:
                for kind in kinds:
                    cols, norm = _read_columns(w, kind, reader_heads)  # [d_model, rh * d_head], [rh]
                    if kind not in reach:
                        reach[kind] = torch.zeros(len(writer_layers), wh, w.W_Q.shape[-1], len(reader_layers), rh,
                                                  dtype=cols.dtype, device=cols.device)
                        read_norm[kind] = torch.zeros(len(reader_layers), rh, dtype=cols.dtype, device=cols.device)
                    read_norm[kind][r_index[layer]] = norm  # ||S_B||_F = ||R_B||_F
                    for l in earlier:
                        proj = held[l] @ cols.to(held[l].device)  # [wh * comp, rh * d_head]
                        reach[kind][w_index[l], :, :, r_index[layer]] = proj.reshape(wh, -1, rh, cols.shape[1] // rh).norm(dim=-1)
            if layer in block:
                assert ov_s is not None and ov_vh is not None  # (computed for every layer in the block)
                held[layer] = ov_vh.flatten(0, 1)  # [wh * comp, d_model]
                if writer_s is None:
                    writer_s = torch.zeros(len(writer_layers), wh, ov_s.shape[-1], dtype=ov_s.dtype, device=ov_s.device)
                writer_s[w_index[layer]] = ov_s[writer_heads]
            w = ov_vh = cols = proj = None
            release_freed()  # the layer's temporaries: else resident memory keeps their high-water mark
            steps.update()
        del held
    steps.close()
    comps = {}
    for kind in kinds:  # reach becomes the component scores in place
        if kind not in reach or writer_s is None:  # no reader after any writer (the caller checks this before)
            continue
        comps[kind] = scores_from_reach(writer_s, reach.pop(kind), read_norm[kind])
    head_norms = HeadNorms(torch.cat(norms, dim=1), shapes, folded)
    return Streamed(comps, _every_layer(sv_ov, attention, n_layers), _every_layer(sv_qk, attention, n_layers),
                    head_norms, heads_per_kv, folded)


def _every_layer(rows: list[Tensor], layers: list[int], n_layers: int) -> Tensor:
    """Per-layer rows of ``layers`` as one tensor with a row for every layer (NaN for the others)."""
    out = torch.full((n_layers, *rows[0].shape), float("nan"), dtype=rows[0].dtype)
    out[layers] = torch.stack(rows)
    return out


@torch.no_grad()
def rotated_null_streamed(model, kinds: tuple[str, ...], n: int, seed: int, *, fold_norm: bool) -> dict[str, Composition]:
    """:func:`~workbench.analyses.heads.scores.rotated_null_scores` (same picks, frames and values) reading only the
    layers that hold the picked heads, once each: a writer is kept as the R factors of its W_V and W_O (all its
    rotated OV needs), a reader is met one at a time (:class:`Reach`). Memory: one layer plus the writers'
    n x d_head output directions, instead of 2 x n heads' four matrices."""
    n_heads, attention = model.facts.n_heads, model.facts.attention_layers
    gen, pw, pr = rotated_picks(len(attention) * n_heads, n, seed)
    r_v, r_o = [None] * n, [None] * n
    for layer, picks in _gather(pw, n_heads, attention).items():
        w = head_weights(model, (layer,), fold_norm=fold_norm)
        for pos, head in picks:
            r_v[pos] = torch.linalg.qr(w.W_V[0, head].double())[1]
            r_o[pos] = torch.linalg.qr(w.W_O[0, head].double().mT)[1]  # W_O = r^T q^T
        dtype, d_head, d_model = w.W_O.dtype, w.W_O.shape[-2], w.W_O.shape[-1]
        del w
        release_freed()

    def turned():  # rotated_null_of's Haar frames, drawn in its order; W_O turned = r^T frame^T
        for pos, frame in enumerate(normal_draws(n, (d_model, d_head), gen)):
            frame = torch.linalg.qr(frame)[0].to(r_o[pos].device)
            yield svd_from_r(r_v[pos], (r_o[pos].mT @ frame.mT).to(dtype))

    writer_s, writer_v = writer_directions(turned(), n)
    reach = {kind: Reach(writer_v, n) for kind in kinds}
    for layer, picks in _gather(pr, n_heads, attention).items():
        heads = sorted({head for _, head in picks})
        w = take(head_weights(model, (layer,), fold_norm=fold_norm), [0], heads)
        for kind in kinds:
            read = read_matrices(w, kind)[0]
            for pos, head in picks:
                reach[kind].add(pos, read[heads.index(head)])
        del w, read
        release_freed()
    out = {kind: r.flush().scores(writer_s) for kind, r in reach.items()}
    del reach, writer_v
    release_freed()
    return out
