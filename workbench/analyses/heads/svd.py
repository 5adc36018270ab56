"""Per-head OV and QK circuits as rank-1 components, computed in factored form.

Conventions (TransformerLens, row vectors ``x @ W``):
    OV_h = W_V,h W_O,h  (d_model x d_model, rank <= d_head): a head reads ``x`` and writes ``x @ OV_h``.
    QK_h = W_Q,h W_K,h^T (d_model x d_model): attention logit = ``x_query @ QK_h @ x_key^T``.
An SVD ``M = sum_i s_i u_i v_i^T`` then has ``u_i`` = the direction the circuit reads (input
side) and ``v_i`` = the direction it writes (OV) or the key direction it matches (QK).

Grouped-query attention: query head ``h`` reads key/value head ``h // heads_per_kv``. Every
circuit here is per *query* head, with W_K / W_V repeated (:func:`expand_kv`): query heads that
share a K/V head have distinct OV circuits (their W_O differ) and distinct QK circuits (their
W_Q differ), but the same V (resp. K) input subspace.

Norm folding: a head reads ``norm(x) = g * x / rms(x)``, so the reader-side weights it really
applies to the residual direction are ``diag(g) W_Q`` (and W_K, W_V). ``fold_norm=True`` folds the
norm's effective gain ``g`` in (Gemma's ``1 + w`` included; LayerNorm's centering is not folded); the
scalar ``1/rms(x)`` cannot be and cancels in every normalised score anyway. What the family fixes is
always folded: query / key norm gains into W_Q / W_K, and on the writing side the gain of a norm on the
attention's output (Gemma 2/3, OLMo 2) and a residual multiplier (Granite) into W_O — a head's write
is what reaches the residual stream (``HookedModel.effective_attention_weights``).

Factored SVD: for ``M = A B`` with ``A`` [m, r], ``B`` [r, n], r << m, n: QR ``A = Q_a R_a`` and
``B^T = Q_b R_b``, so ``M = Q_a (R_a R_b^T) Q_b^T`` and the SVD of the r x r core gives everything.
No m x n product is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError, UnsupportedModelError
from ...linalg import effective_rank


@dataclass(frozen=True)
class HeadWeights:
    """Attention weights of chosen layers, one entry per query head (K/V expanded).

    ``W_Q``, ``W_K``, ``W_V``: [layer, head, d_model, d_head], norm gain folded in when asked;
    ``W_O``: [layer, head, d_head, d_model]; ``layers``: the model layer of each row.
    """

    W_Q: Float[Tensor, "layer head d_model d_head"]
    W_K: Float[Tensor, "layer head d_model d_head"]
    W_V: Float[Tensor, "layer head d_model d_head"]
    W_O: Float[Tensor, "layer head d_head d_model"]
    layers: tuple[int, ...]
    heads_per_kv: int
    norm_folded: bool

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


def _chosen_layers(n_layers: int, layers: tuple[int, ...] | None) -> tuple[int, ...]:
    """``layers`` (default: all) as sorted distinct indices in [0, n_layers); negative ones count from the end."""
    layers = tuple(range(n_layers)) if layers is None else tuple(sorted({int(l) % n_layers for l in layers}))
    if not layers:
        raise InputError("no layers chosen: pass at least one layer index")
    return layers


def head_weights(model, layers: tuple[int, ...] | None = None, *, fold_norm: bool = True,
                 dtype: torch.dtype = torch.float32) -> HeadWeights:
    """Stack the attention weights of ``layers`` (default: all) per query head, on the model's device."""
    layers = _chosen_layers(model.facts.n_layers, layers)
    qs, ks, vs, os_ = [], [], [], []
    heads_per_kv, folded = 1, fold_norm
    for layer in layers:
        # What the heads really read and write (models/writes.py): q/k-norm gains, output norms and residual
        # multipliers always folded in; the input norm's gain when fold_norm (the family may have none).
        attn = model.effective_attention_weights(layer, fold_input_norm=fold_norm)
        folded = folded and model.norm_gain(layer, "attn") is not None
        heads_per_kv = attn.heads_per_kv
        attn = attn.expanded()
        wq, wk, wv = attn.W_Q.to(dtype), attn.W_K.to(dtype), attn.W_V.to(dtype)
        qs.append(wq)
        ks.append(wk)
        vs.append(wv)
        os_.append(attn.W_O.to(dtype))
    device = qs[0].device
    stack = lambda ts: torch.stack([t.to(device) for t in ts])  # noqa: E731
    return HeadWeights(stack(qs), stack(ks), stack(vs), stack(os_), layers, heads_per_kv, folded)


def layer_rows(w: HeadWeights, layers: tuple[int, ...] | None) -> list[int]:
    """Rows of ``w`` holding ``layers`` (chosen as :func:`head_weights` chooses them; default: all).
    ``w`` must hold every layer of its model, as ``head_weights(model)`` does."""
    n_layers = len(w.layers)
    if w.layers != tuple(range(n_layers)):
        raise InputError(f"layer_rows needs the weights of every layer, got layers {w.layers}")
    return list(_chosen_layers(n_layers, layers))


def _pick(t: Tensor, rows: list[int], heads: list[int] | None) -> Tensor:
    """``t[rows][:, heads]`` ([layer, head, ..]), without a copy where nothing is left out."""
    if rows != list(range(t.shape[0])):
        t = t[rows]
    return t if heads is None else t[:, heads]


def take(w: HeadWeights, rows: list[int], heads: list[int] | None = None) -> HeadWeights:
    """The heads ``heads`` (default: all) of the layer rows ``rows`` of ``w``: what ``head_weights`` of
    those layers gives, without stacking the model's weights again."""
    q, k, v, o = (_pick(m, rows, heads) for m in (w.W_Q, w.W_K, w.W_V, w.W_O))
    return HeadWeights(q, k, v, o, tuple(w.layers[r] for r in rows), w.heads_per_kv, w.norm_folded)


def qr_r(a: Float[Tensor, "... m r"]) -> Float[Tensor, "... r r"]:
    """``R`` of the thin QR ``a = Q R`` (float64 inside): ``a^T a = R^T R``, hence
    ``||y^T a^T|| = ||y^T R^T||`` for every ``y``; works for rank-deficient ``a`` (unlike Cholesky)."""
    return torch.linalg.qr(a.double(), mode="r")[1].to(a.dtype)


@dataclass(frozen=True)
class FactoredSVD:
    """SVD of a batch of products ``A @ B`` in factored form: ``A B = U diag(S) Vh``."""

    U: Float[Tensor, "... m r"]  # left singular vectors (read / query directions), columns
    S: Float[Tensor, "... r"]  # singular values, descending
    Vh: Float[Tensor, "... r n"]  # right singular vectors (write / key directions), rows


def factored_svd(a: Float[Tensor, "... m r"], b: Float[Tensor, "... r n"]) -> FactoredSVD:
    """Thin SVD of ``a @ b`` with only r x r decompositions (float64 inside for accuracy)."""
    if a.shape[-1] != b.shape[-2]:
        raise InputError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    dtype = a.dtype
    a64, b64 = a.double(), b.double()
    qa, ra = torch.linalg.qr(a64)  # a = qa ra:   [.., m, r], [.., r, r]
    qb, rb = torch.linalg.qr(b64.mT)  # b^T = qb rb: [.., n, r], [.., r, r]
    core = ra @ rb.mT  # a b = qa (ra rb^T) qb^T: [.., r, r]
    u, s, wh = torch.linalg.svd(core)
    return FactoredSVD((qa @ u).to(dtype), s.to(dtype), (wh @ qb.mT).to(dtype))


def svd_from_r(r_a: Float[Tensor, "... r r"], b: Float[Tensor, "... r n"], *, right: bool = True
               ) -> tuple[Float[Tensor, "... r"], Float[Tensor, "... r n"] | None]:
    """``S`` and (``right``) ``Vh`` of :func:`factored_svd` ``(a, b)``, equal to its, from ``R`` of ``a``'s QR
    (float64): all the right side needs, so a caller need not keep ``a`` (d_model x d_head) nor form ``U``."""
    qb, rb = torch.linalg.qr(b.double().mT, mode="reduced" if right else "r")
    _, s, wh = torch.linalg.svd(r_a @ rb.mT)
    return s.to(b.dtype), (wh @ qb.mT).to(b.dtype) if right else None


def ov_svd(w: HeadWeights) -> FactoredSVD:
    """SVD of every head's OV circuit W_V W_O: U [layer, head, d_model, d_head], Vh [.., d_head, d_model]."""
    return factored_svd(w.W_V, w.W_O)


def qk_svd(w: HeadWeights) -> FactoredSVD:
    """SVD of every head's QK circuit W_Q W_K^T."""
    return factored_svd(w.W_Q, w.W_K.mT)


def spectrum_stats(s: Float[Tensor, "... r"]) -> dict[str, Tensor]:
    """Frobenius norm, sigma_max, stable rank and effective rank (exp spectral entropy) per spectrum."""
    s = s.double()
    fro2 = s.square().sum(-1)
    return {
        "frobenius": fro2.sqrt(),
        "sigma_max": s[..., 0],
        "stable_rank": fro2 / s[..., 0].square().clamp_min(1e-300),
        "effective_rank": effective_rank(s),
        "share_top1": s[..., 0].square() / fro2.clamp_min(1e-300),  # fraction of ||M||_F^2 in component 0
    }


def check_weights(model) -> None:
    """Composition maths needs finite weights and an attention layer in every block."""
    model.require_finite_weights()
    if model.facts.n_heads < 1:
        raise UnsupportedModelError(f"{model.name} has no attention heads; head composition needs attention")
