"""Q-, K- and V-composition between attention heads, whole-head and per SVD component of the writer.

Composition score (Elhage et al. 2021): ``CS(L, R) = ||L R||_F / (||L||_F ||R||_F)`` with
``L = OV_A`` of a writer head A in an earlier layer and, for a reader head B in a later layer,
``R = QK_B`` (Q-composition: A's output feeds B's queries), ``QK_B^T`` (K-composition: B's keys)
or ``OV_B`` (V-composition: B's values). Row-vector convention, as in TransformerLens.

Factored form. Every ``R`` is ``X Y^T`` with ``X, Y`` [d_model, d_head]; with ``Y = Q_y R_y``,
``||z^T R|| = ||z^T X R_y^T||`` for any vector z. So each reader gets a d_model x d_head "read
matrix" ``S_B = X R_y^T`` (Q: X = W_Q, Y = W_K;  K: X = W_K, Y = W_Q;  V: X = W_V, Y = W_O^T).
The writer's OV = sum_i s_i u_i v_i^T (u_i orthonormal), so

    ||OV_A R_B||_F^2 = sum_i s_i^2 ||v_i^T S_B||^2      (per-component terms add up exactly)
    per-component score  CS_i = ||v_i^T S_B|| / ||S_B||_F          (L = s_i u_i v_i^T; s_i cancels)
    whole-head score     CS   = sqrt(sum_i s_i^2 ||v_i^T S_B||^2) / (||s|| ||S_B||_F)
    share_i = s_i^2 ||v_i^T S_B||^2 / ||OV_A R_B||_F^2              (sums to 1 over i)

All writer components of a layer against all later readers is one matmul
[heads*d_head, d_model] @ [d_model, readers*d_head]: no d_model x d_model product is formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float
from torch import Tensor

from ..._memory import release_freed
from ..._progress import progress
from ...errors import InputError
from .svd import FactoredSVD, HeadWeights, ov_svd, qr_r, svd_from_r

KINDS = ("Q", "K", "V")


def read_matrices(w: HeadWeights, kind: str) -> Float[Tensor, "layer head d_model d_head"]:
    """``S_B`` with ``||z^T R_B|| = ||z^T S_B||`` for every z, for the reader circuit of ``kind``."""
    if kind == "Q":  # R = W_Q W_K^T
        x, y = w.W_Q, w.W_K
    elif kind == "K":  # R = (W_Q W_K^T)^T = W_K W_Q^T
        x, y = w.W_K, w.W_Q
    elif kind == "V":  # R = W_V W_O
        x, y = w.W_V, w.W_O.mT
    else:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    return x @ qr_r(y).mT  # [.., d_model, d_head] @ [.., d_head, d_head]


@dataclass(frozen=True)
class Composition:
    """Scores of one kind. ``component``: [w_layer, w_head, comp, r_layer, r_head] per-component CS;
    ``head``: [w_layer, w_head, r_layer, r_head] whole-head CS; ``writer_s``: [w_layer, w_head, comp] the
    writers' OV singular values. Zero where the reader's layer is not after the writer's."""

    component: Float[Tensor, "wl wh comp rl rh"]
    head: Float[Tensor, "wl wh rl rh"]
    writer_s: Float[Tensor, "wl wh comp"]

    def share_of(self, writer_layer: int) -> Float[Tensor, "wh comp rl rh"]:
        """For the writers of row ``writer_layer``: the fraction of ``||OV_A R_B||_F^2`` carried by each
        component (``s_i^2 CS_i^2`` normalised over i: the reader's norm cancels)."""
        weighted = (self.writer_s[writer_layer][..., None, None] * self.component[writer_layer]).square()
        return weighted / weighted.sum(1, keepdim=True).clamp_min(1e-30)

    @cached_property
    def share(self) -> Float[Tensor, "wl wh comp rl rh"]:
        """:meth:`share_of` for every writer row at once (the size of ``component``; big models: use share_of)."""
        return torch.stack([self.share_of(i) for i in range(self.component.shape[0])])


def composition_scores(
    writer_s: Float[Tensor, "wl wh comp"],
    writer_v: Float[Tensor, "wl wh comp d_model"],
    read: Float[Tensor, "rl rh d_model d_head"],
    writer_layers: tuple[int, ...],
    reader_layers: tuple[int, ...],
    *,
    causal: bool = True,
    show_progress: bool = True,
) -> Composition:
    """All writer components against all readers; with ``causal`` only reader layer > writer layer.

    ``writer_s`` / ``writer_v``: singular values and (row) output directions of each writer's OV;
    ``read``: the readers' read matrices (:func:`read_matrices`).
    """
    wl, wh, nc, d_model = writer_v.shape
    rl, rh, _, d_head = read.shape
    read_norm = read.flatten(-2).norm(dim=-1)  # ||S_B||_F = ||R_B||_F: [rl, rh]
    flat_read = read.permute(2, 0, 1, 3).reshape(d_model, rl * rh * d_head)  # [d_model, readers*d_head]
    reach = torch.zeros(wl, wh, nc, rl, rh, dtype=read.dtype, device=read.device)  # ||v_i^T S_B||
    r_layers = torch.tensor(reader_layers)
    for i, layer in enumerate(progress(writer_layers, desc="composition", enabled=show_progress)):
        first = int(torch.searchsorted(r_layers, layer, right=True)) if causal else 0  # readers after the writer
        if first >= rl:
            continue
        cols = flat_read[:, first * rh * d_head:]
        proj = writer_v[i].reshape(wh * nc, d_model) @ cols  # [wh*comp, later readers * d_head]
        reach[i, :, :, first:] = proj.reshape(wh, nc, rl - first, rh, d_head).norm(dim=-1)
    return scores_from_reach(writer_s, reach, read_norm)


def scores_from_reach(writer_s: Float[Tensor, "wl wh comp"], reach: Float[Tensor, "wl wh comp rl rh"],
                      read_norm: Float[Tensor, "rl rh"]) -> Composition:
    """Whole-head and per-component scores from ``reach`` = ``||v_i^T S_B||``, which becomes ``component`` in
    place (one writer row at a time: nothing of reach's size is allocated beside it)."""
    head = torch.zeros(reach.shape[:2] + reach.shape[3:], dtype=reach.dtype, device=reach.device)
    s_norm = writer_s.norm(dim=-1)  # ||OV_A||_F: [wl, wh]
    for i in range(reach.shape[0]):
        total = (writer_s[i][..., None, None] * reach[i]).square().sum(1)  # ||OV_A R_B||_F^2: [wh, rl, rh]
        head[i] = total.sqrt() / (s_norm[i][:, None, None] * read_norm).clamp_min(1e-30)
        reach[i] /= read_norm.clamp_min(1e-30)
    return Composition(reach, head, writer_s)


def all_compositions(
    writers: HeadWeights, readers: HeadWeights, kinds: tuple[str, ...] = KINDS, *, causal: bool = True,
    show_progress: bool = True, ov: FactoredSVD | None = None,
) -> dict[str, Composition]:
    """Every requested kind between the heads of ``writers`` and ``readers`` (their own layer indices).

    ``ov``: the writers' :func:`~workbench.analyses.heads.svd.ov_svd`, when the caller has it already."""
    ov = ov_svd(writers) if ov is None else ov
    out = {}
    for kind in kinds:
        out[kind] = composition_scores(ov.S, ov.Vh, read_matrices(readers, kind), writers.layers,
                                       readers.layers, causal=causal, show_progress=show_progress)
    return out


# ---------------------------------------------------------------- references
def dense_score(left: Tensor, right: Tensor) -> Tensor:
    """``||L R||_F / (||L||_F ||R||_F)`` from explicit matrices (reference / tests / benchmark)."""
    left, right = left.double(), right.double()
    return (left @ right).norm() / (left.norm() * right.norm())


def dense_circuits(w: HeadWeights, layer: int, head: int) -> dict[str, Tensor]:
    """Explicit d_model x d_model OV, QK of one head (row ``layer`` of ``w``): for references only."""
    q, k, v, o = (m[layer, head].double() for m in (w.W_Q, w.W_K, w.W_V, w.W_O))
    return {"OV": v @ o, "QK": q @ k.T}


def right_matrix(circuits: dict[str, Tensor], kind: str) -> Tensor:
    """The reader matrix R of ``kind`` from :func:`dense_circuits`."""
    return {"Q": circuits["QK"], "K": circuits["QK"].T, "V": circuits["OV"]}[kind]


# ---------------------------------------------------------------- null baseline
@dataclass(frozen=True)
class HeadNorms:
    """All the Gaussian null needs of the real heads: the Frobenius norm of every head's W_Q, W_K, W_V, W_O
    (``norms`` [4, layer*head], layer-major) and the matrices' shapes."""

    norms: Float[Tensor, "4 heads"]
    shapes: tuple[tuple[int, int], ...]
    norm_folded: bool

    @staticmethod
    def of(w: HeadWeights) -> "HeadNorms":
        mats = (w.W_Q, w.W_K, w.W_V, w.W_O)
        return HeadNorms(torch.stack([m.flatten(0, 1).flatten(1).norm(dim=-1) for m in mats]),
                         tuple((int(m.shape[2]), int(m.shape[3])) for m in mats), w.norm_folded)


def random_like(w: HeadWeights | HeadNorms, n: int, generator: torch.Generator) -> HeadWeights:
    """``n`` random heads: Gaussian matrices with the shapes of ``w``'s and the Frobenius norms of
    randomly chosen real heads (norms do not change a score, but a null should look like the model)."""
    w = HeadNorms.of(w) if isinstance(w, HeadWeights) else w
    pick = torch.randint(0, w.norms.shape[1], (n,), generator=generator)
    mats = []
    for norms, shape in zip(w.norms, w.shapes):
        g = torch.randn((n, *shape), generator=generator, dtype=torch.float64).to(norms.device, norms.dtype)
        scale = norms[pick.to(norms.device)] / g.flatten(1).norm(dim=-1).clamp_min(1e-30)
        mats.append((g * scale[:, None, None])[None])  # one pseudo-layer of n heads
    q, k, v, o = mats
    return HeadWeights(q, k, v, o, layers=(0,), heads_per_kv=1, norm_folded=w.norm_folded)


def null_scores(w: HeadWeights | HeadNorms, kinds: tuple[str, ...], n: int, seed: int) -> dict[str, Composition]:
    """Scores between ``n`` random writer heads and ``n`` random reader heads (all n^2 pairs).

    The heads :func:`random_like` would draw (same generator stream, same values), but made one head at a time
    and reduced at once: writers to their OV directions, readers to their read matrices, met in blocks. Holding
    the 8 x n random matrices instead costs 2 GB in float32 at 7B shapes (:func:`null_scores_reference`)."""
    gen = torch.Generator().manual_seed(seed)
    w = HeadNorms.of(w) if isinstance(w, HeadWeights) else w
    device, dtype = w.norms.device, w.norms.dtype

    def heads(pick: Tensor, matrix: int):  # random_like's heads of one matrix, in its order
        for g, target in zip(normal_draws(n, w.shapes[matrix], gen), w.norms[matrix][pick.to(device)]):
            g = g.to(device, dtype)
            yield g * (target / g.flatten().norm().clamp_min(1e-30))

    pick = torch.randint(0, w.norms.shape[1], (n,), generator=gen)  # the writers
    for matrix in (0, 1):  # W_Q, W_K: a writer does not use them, but random_like draws them
        for _ in heads(pick, matrix):
            pass
    r_v = [torch.linalg.qr(v.double())[1] for v in heads(pick, 2)]  # what factored_svd keeps of W_V
    writer_s, writer_v = writer_directions((svd_from_r(r, o) for r, o in zip(r_v, heads(pick, 3))), n)
    pick = torch.randint(0, w.norms.shape[1], (n,), generator=gen)  # the readers
    reach = {kind: Reach(writer_v, n) for kind in kinds}
    q = list(heads(pick, 0))
    for i, k in enumerate(heads(pick, 1)):  # read_matrices' S_B, one reader at a time
        for kind, x, y in (("Q", q[i], k), ("K", k, q[i])):
            if kind in reach:
                reach[kind].add(i, x @ qr_r(y).mT)
        q[i] = None  # no longer needed: its memory goes back
    v = list(heads(pick, 2))
    for i, o in enumerate(heads(pick, 3)):
        if "V" in reach:
            reach["V"].add(i, v[i] @ qr_r(o.mT).mT)
        v[i] = None
    out = {kind: r.flush().scores(writer_s) for kind, r in reach.items()}
    del reach, writer_v
    release_freed()
    return out


def writer_directions(svds, n: int) -> tuple[Float[Tensor, "1 n comp"], Float[Tensor, "rows d_model"]]:
    """Singular values [1, n, comp] and output directions [n * comp, d_model] of ``n`` writers given one (S, Vh)
    at a time, written into place (a list then a stack would hold them twice: 0.5 GB at 7B shapes)."""
    s_all, v_all = [], None
    for i, (s, vh) in enumerate(svds):
        if v_all is None:
            v_all = torch.empty(n, *vh.shape, dtype=vh.dtype, device=vh.device)
        v_all[i] = vh
        s_all.append(s)
    if v_all is None:
        raise InputError("no heads to decompose")
    return torch.stack(s_all)[None], v_all.flatten(0, 1)


def null_scores_reference(w: HeadWeights | HeadNorms, kinds: tuple[str, ...], n: int, seed: int) -> dict[str, Composition]:
    """:func:`null_scores` from the stacked random heads (tests; memory: every random head at once)."""
    gen = torch.Generator().manual_seed(seed)
    writers, readers = random_like(w, n, gen), random_like(w, n, gen)
    return all_compositions(writers, readers, kinds, causal=False, show_progress=False)


def normal_draws(n: int, shape: tuple[int, ...], generator: torch.Generator):
    """``torch.randn((n, *shape), float64)`` one [shape] slice at a time, with the same values: torch's CPU normal
    fill works in groups of 16, so slices of a multiple of 16 values continue the stream exactly. Other sizes
    (tiny test models only) are drawn in one call."""
    size = 1
    for d in shape:
        size *= d
    if size % 16:
        yield from torch.randn((n, *shape), generator=generator, dtype=torch.float64)
        return
    for _ in range(n):
        yield torch.randn(shape, generator=generator, dtype=torch.float64)


REACH_BLOCK = 2**24  # values of one writers x reader-columns product block (64 MB in float32)


REACH_BLOCK = 2**24  # values of one writers x reader-columns product block (64 MB in float32)


class Reach:
    """``||v^T S_B||`` for every row ``v`` of ``writer_v`` [rows, d_model] and each of ``n`` readers, given one read
    matrix ``S_B`` [d_model, d_head] at a time (any order) and multiplied in blocks of readers: neither every read
    matrix nor the full product (n^2 d_head^2 values: 1 GB for 128 x 128 heads of 128) is ever held."""

    def __init__(self, writer_v: Float[Tensor, "rows d_model"], n: int):
        self.writer_v = writer_v
        self.values = torch.empty(writer_v.shape[0], n, dtype=writer_v.dtype, device=writer_v.device)
        self.read_norm = torch.empty(n, dtype=writer_v.dtype, device=writer_v.device)  # ||S_B||_F
        self.pending: list[tuple[int, Tensor]] = []

    def add(self, index: int, read: Float[Tensor, "d_model d_head"]) -> None:
        self.pending.append((index, read.to(self.writer_v.device)))
        if len(self.pending) * read.shape[1] * self.writer_v.shape[0] >= REACH_BLOCK:
            self.flush()

    def flush(self) -> "Reach":
        if self.pending:
            index = torch.tensor([i for i, _ in self.pending], device=self.values.device)
            block = torch.stack([r for _, r in self.pending])  # [b, d_model, d_head]
            self.read_norm[index] = block.flatten(-2).norm(dim=-1)
            cols = block.permute(1, 0, 2).reshape(block.shape[1], -1)
            self.values[:, index] = (self.writer_v @ cols).reshape(-1, len(index), block.shape[2]).norm(dim=-1)
            self.pending = []
        return self

    def scores(self, writer_s: Float[Tensor, "1 n comp"]) -> "Composition":
        """The scores of every writer (one pseudo-layer, ``writer_s``) against every reader (one pseudo-layer)."""
        n, comp = writer_s.shape[1], writer_s.shape[2]
        return scores_from_reach(writer_s, self.values.reshape(1, n, comp, 1, -1), self.read_norm[None])


def rotated_picks(n_heads: int, n: int, seed: int) -> tuple[torch.Generator, Tensor, Tensor]:
    """The generator of the rotated null and the real heads it uses (flat layer*head indices): writers, readers.
    Drawn before any weight is read, so a caller streaming layers can gather just these heads."""
    gen = torch.Generator().manual_seed(seed)
    return gen, torch.randint(0, n_heads, (n,), generator=gen), torch.randint(0, n_heads, (n,), generator=gen)


def rotated_null_scores(w: HeadWeights, kinds: tuple[str, ...], n: int, seed: int) -> dict[str, Composition]:
    """A stricter null: ``n`` real writer heads whose output space is turned by a random rotation
    (same OV spectrum and norm, random orientation) against ``n`` real reader heads.

    The Gaussian null ignores that real heads share anisotropic residual directions (norm gains,
    massive activations); this one keeps every head's own structure and only breaks the alignment.
    ``W_O = A B`` with orthonormal rows ``B``: replacing ``B`` by a Haar-random orthonormal frame is
    ``W_O @ Q`` for a Haar-random rotation ``Q`` (only W_O's row space moves).
    """
    gen, pw, pr = rotated_picks(w.W_Q.shape[0] * w.W_Q.shape[1], n, seed)
    def pick(p: Tensor) -> HeadWeights:
        q, k, v, o = (m.flatten(0, 1)[p.to(m.device)][None] for m in (w.W_Q, w.W_K, w.W_V, w.W_O))
        return HeadWeights(q, k, v, o, (0,), 1, w.norm_folded)

    return rotated_null_of(pick(pw), pick(pr), kinds, gen)


def rotated_null_of(writers: HeadWeights, readers: HeadWeights, kinds: tuple[str, ...],
                    gen: torch.Generator) -> dict[str, Composition]:
    """The rotated null from the picked real heads (one pseudo-layer each), ``gen`` as :func:`rotated_picks` left it."""
    W_O = writers.W_O[0].double()  # [n, d_head, d_model]
    q, r = torch.linalg.qr(W_O.mT)  # W_O = r^T q^T
    frame = torch.linalg.qr(torch.randn(q.shape, generator=gen, dtype=torch.float64))[0].to(q.device)  # Haar frames
    rotated = (r.mT @ frame.mT).to(writers.W_O.dtype)
    turned = HeadWeights(writers.W_Q, writers.W_K, writers.W_V, rotated[None], (0,), 1, writers.norm_folded)
    return all_compositions(turned, readers, kinds, causal=False, show_progress=False)
