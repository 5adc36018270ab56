"""Head composition of every pair, reading one layer's attention weights at a time.

Holding every head's weights at once (4 x layers x d_model^2 values: 8.6 GB in float32 for a 7B model) is
what limits composition by memory, not the result. Here layers are streamed: in pass order, a layer is
first a reader — its read matrices (``composition.read_matrices``) meet the output directions of the
earlier writers held — and then a writer whose OV directions are kept. The writers held are bounded by
``WRITER_BLOCK_BYTES``: a model whose writers exceed it is done in blocks of writer layers, each block
streaming the later layers again (reading weights twice costs little next to the products). The first
pass also keeps everything small that the result needs of every layer: singular values, per-head norms for
the Gaussian null and the few real heads the rotated null draws.

Peak memory: the result (per-component scores, ``layers^2 heads^2 d_head`` values per kind) plus one block
of writers plus a layer's weights — never the stack of all weights. Works the same on a loaded model and on
``wb.load_weights`` (which reads each layer from the shards when asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._progress import progress
from .composition import Composition, HeadNorms, read_matrices, rotated_picks, scores_from_reach
from .head_svd import HeadWeights, head_weights, ov_svd, qk_svd

WRITER_BLOCK_BYTES = 512 * 2**20  # OV output directions of the writers held at once (float32)


@dataclass
class Streamed:
    """What :func:`stream_compositions` returns: scores per kind and the per-layer summaries."""

    comps: dict[str, Composition]
    sv_ov: Tensor  # [layer, head, d_head] every head's OV singular values
    sv_qk: Tensor  # [layer, head, d_head]
    norms: HeadNorms  # for the Gaussian null
    rotated: tuple[HeadWeights, HeadWeights] | None  # the rotated null's real writer / reader heads (one
    # pseudo-layer each); None when no null is drawn
    heads_per_kv: int
    norm_folded: bool


def _blocks(layers: list[int], per_layer_bytes: int) -> list[list[int]]:
    size = max(1, WRITER_BLOCK_BYTES // max(per_layer_bytes, 1))
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def _gather(picks: Tensor, n_heads: int) -> dict[int, list[tuple[int, int]]]:
    """layer -> [(position in the pick list, head)] for flat layer*head indices."""
    out: dict[int, list[tuple[int, int]]] = {}
    for pos, flat in enumerate(picks.tolist()):
        out.setdefault(flat // n_heads, []).append((pos, flat % n_heads))
    return out


@torch.no_grad()
def stream_compositions(model, kinds: tuple[str, ...], writer_layers: tuple[int, ...], reader_layers: tuple[int, ...],
                        writer_heads: list[int], reader_heads: list[int], *, fold_norm: bool, null_samples: int,
                        rotated_seed: int) -> tuple[Streamed, torch.Generator]:
    """All kinds of composition between the chosen writer and (later) reader heads, streaming layers.

    Returns the scores and summaries, and the rotated null's generator (as :func:`rotated_picks` left it)."""
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    gen, pw, pr = rotated_picks(n_layers * n_heads, null_samples, rotated_seed)
    want_w, want_r = _gather(pw, n_heads), _gather(pr, n_heads)
    w_index, r_index = {l: i for i, l in enumerate(writer_layers)}, {l: i for i, l in enumerate(reader_layers)}
    wh, rh = len(writer_heads), len(reader_heads)
    sv_ov, sv_qk, norms, picked_w, picked_r = [], [], [], [None] * null_samples, [None] * null_samples
    reach: dict[str, Tensor] = {}
    read_norm: dict[str, Tensor] = {}
    writer_s = None
    heads_per_kv, folded = 1, fold_norm
    blocks = _blocks(list(writer_layers), wh * model.info.d_head * model.info.d_model * 4)
    last_reader = max(reader_layers)
    steps = progress(total=n_layers + sum(last_reader - b[0] + 1 for b in blocks[1:]), desc="composition")
    for b, block in enumerate(blocks):
        held: dict[int, Tensor] = {}  # writer layer -> its heads' output directions [wh * comp, d_model]
        for layer in range(0 if b == 0 else block[0], n_layers if b == 0 else last_reader + 1):
            w = head_weights(model, (layer,), fold_norm=fold_norm)  # one layer: [1, head, ...]
            ov = ov_svd(w) if (b == 0 or layer in block) else None
            if b == 0:  # what the result needs of every layer, once
                sv_ov.append(ov.S[0].cpu())
                sv_qk.append(qk_svd(w).S[0].cpu())
                norms.append(HeadNorms.of(w).norms)
                heads_per_kv = w.heads_per_kv
                folded = folded and w.norm_folded
                for picks, out in ((want_w.get(layer, ()), picked_w), (want_r.get(layer, ()), picked_r)):
                    for pos, head in picks:
                        out[pos] = [m[0, head].clone() for m in (w.W_Q, w.W_K, w.W_V, w.W_O)]
            earlier = [l for l in held if l < layer]
            if layer in r_index and earlier:
                for kind in kinds:
                    read = read_matrices(w, kind)[0][reader_heads]  # [rh, d_model, d_head]
                    if kind not in reach:
                        reach[kind] = torch.zeros(len(writer_layers), wh, w.W_Q.shape[-1], len(reader_layers), rh,
                                                  dtype=read.dtype, device=read.device)
                        read_norm[kind] = torch.zeros(len(reader_layers), rh, dtype=read.dtype, device=read.device)
                    read_norm[kind][r_index[layer]] = read.flatten(-2).norm(dim=-1)  # ||S_B||_F = ||R_B||_F
                    cols = read.permute(1, 0, 2).reshape(read.shape[1], -1)  # [d_model, rh * d_head]
                    for l in earlier:
                        proj = held[l] @ cols.to(held[l].device)  # [wh * comp, rh * d_head]
                        reach[kind][w_index[l], :, :, r_index[layer]] = proj.reshape(wh, -1, rh, cols.shape[1] // rh).norm(dim=-1)
            if layer in block:
                held[layer] = ov.Vh[0][writer_heads].flatten(0, 1)  # [wh * comp, d_model]
                if writer_s is None:
                    writer_s = torch.zeros(len(writer_layers), wh, ov.S.shape[-1], dtype=ov.S.dtype, device=ov.S.device)
                writer_s[w_index[layer]] = ov.S[0][writer_heads]
            steps.update()
        del held
    steps.close()
    comps = {}
    for kind in kinds:  # reach becomes the component scores in place
        if kind not in reach:  # no reader after any writer (the caller checks this before)
            continue
        comps[kind] = scores_from_reach(writer_s, reach.pop(kind), read_norm[kind])
    stack = lambda rows: HeadWeights(*(torch.stack([r[i] for r in rows])[None] for i in range(4)), (0,), 1, folded)  # noqa: E731
    rotated = (stack(picked_w), stack(picked_r)) if null_samples >= 2 else None
    shapes = (tuple(picked_w[0][0].shape), tuple(picked_w[0][1].shape), tuple(picked_w[0][2].shape),
              tuple(picked_w[0][3].shape)) if null_samples >= 2 else ()
    head_norms = HeadNorms(torch.cat(norms, dim=1), shapes, folded)
    return Streamed(comps, torch.stack(sv_ov), torch.stack(sv_qk), head_norms, rotated, heads_per_kv, folded), gen
