"""Interaction matrices of bilinear layers and their eigendecomposition, batched over output directions.

For out = P ((W x) * (V x)) and an output direction u, the output along u is the quadratic form
x^T Q_u x with Q_u = sum_o c_o w_o v_o^T, c = P^T u (w_o, v_o: rows of W, V). Only the symmetric
part (Q_u + Q_u^T) / 2 contributes, and only it has real, orthogonal eigenvectors, so every
function here works with the symmetrized matrix.

Two paths to the eigenpairs, both batched over directions:

* dense: build Q_u [d_in, d_in] for every direction, ``eigh`` each (O(d_in^3) per direction);
* factored: Q_u = A^T M_u A with A = [W; V] [2h, d_in], so Q_u lives in the column space of A^T.
  One thin QR A^T = Q R (shared by all directions) turns it into Q S_u Q^T with the small
  S_u = (R_W C R_V^T + R_V C R_W^T) / 2 [r, r], r = min(2h, d_in): O(r^3) per direction, the
  eigenvectors are Q U. The d_in - r eigenvalues it does not return are exactly zero.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError


def output_coefficients(P: Float[Tensor, "d_out h"], directions: Float[Tensor, "k d_out"]) -> Float[Tensor, "k h"]:
    """c = P^T u for every direction u (rows of ``directions``)."""
    if directions.ndim != 2 or directions.shape[1] != P.shape[0]:
        raise InputError(f"directions must be [k, {P.shape[0]}] (one output-space vector per row), got {tuple(directions.shape)}")
    return directions.to(P.dtype) @ P  # [k, h]


def interaction_matrices(
    W: Float[Tensor, "h d"], V: Float[Tensor, "h d"], c: Float[Tensor, "k h"], *, symmetrize: bool = True
) -> Float[Tensor, "k d d"]:
    """Q_u = sum_o c_o w_o v_o^T for each row of ``c``, symmetrized unless ``symmetrize=False``."""
    q = (W.mT[None] * c[:, None, :]) @ V  # [k, d, h] @ [h, d] -> [k, d, d]
    return (q + q.mT) / 2 if symmetrize else q


def choose_method(d_in: int, d_hidden: int, method: str = "auto") -> str:
    """'factored' when the rank bound 2h is below d_in (the small problem is cheaper), else 'dense'."""
    if method not in ("auto", "dense", "factored"):
        raise InputError(f"method must be 'auto', 'dense' or 'factored', got {method!r}")
    if method != "auto":
        return method
    return "factored" if 2 * d_hidden < d_in else "dense"


def eigendecompose(
    W: Float[Tensor, "h d"],
    V: Float[Tensor, "h d"],
    c: Float[Tensor, "k h"],
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.float64,
    chunk: int = 64,
) -> tuple[Float[Tensor, "k r"], Float[Tensor, "k r d"]]:
    """Eigenvalues (descending) and unit eigenvectors (rows) of every symmetrized Q_u.

    ``r`` = d_in on the dense path, min(2h, d_in) on the factored one (the rest are zeros).
    Directions are processed ``chunk`` at a time (one batched ``eigh`` per chunk) to bound memory.
    """
    W, V, c = W.to(dtype), V.to(dtype), c.to(dtype)
    method = choose_method(W.shape[1], W.shape[0], method)
    h = W.shape[0]
    if method == "factored":
        basis, R = torch.linalg.qr(torch.cat([W, V]).mT)  # [d, r], [r, 2h]
        R_W, R_V = R[:, :h], R[:, h:]  # W^T = basis R_W, V^T = basis R_V
    values, vectors = [], []
    for start in range(0, c.shape[0], chunk):
        cc = c[start:start + chunk]  # [kc, h]
        if method == "dense":
            lam, vec = torch.linalg.eigh(interaction_matrices(W, V, cc))  # ascending, columns
        else:
            S = interaction_matrices(R_W.mT, R_V.mT, cc)  # [kc, r, r] = sym(R_W C R_V^T)
            lam, U = torch.linalg.eigh(S)
            vec = basis @ U  # [kc, d, r]
        values.append(lam.flip(-1))
        vectors.append(vec.flip(-1).mT)  # rows = eigenvectors, descending eigenvalue
    return torch.cat(values), torch.cat(vectors)


def contributions(
    eigenvalues: Float[Tensor, "k r"], eigenvectors: Float[Tensor, "k r d"], x: Float[Tensor, "n d"]
) -> Float[Tensor, "n k r"]:
    """lambda_i (v_i^T x)^2 for every input, direction and eigenvector; summed over r it is x^T Q_u x."""
    proj = torch.einsum("krd,nd->nkr", eigenvectors, x.to(eigenvectors.dtype))  # [n, k, r]
    return eigenvalues[None] * proj.square()


def by_magnitude(eigenvalues: Float[Tensor, "k r"]) -> torch.Tensor:
    """Per direction, the eigen indices ordered by |lambda|, largest first: [k, r]."""
    return eigenvalues.abs().argsort(-1, descending=True)


def truncated_outputs(
    eigenvalues: Float[Tensor, "k r"], eigenvectors: Float[Tensor, "k r d"], x: Float[Tensor, "n d"], ks: tuple[int, ...]
) -> Float[Tensor, "n k n_ks"]:
    """x^T Q_u x keeping only the ``k`` largest-|lambda| eigenvectors per direction, for every k in ``ks``.

    All truncation levels come from one cumulative sum over the magnitude-sorted contributions.
    """
    order = by_magnitude(eigenvalues)  # [k, r]
    contrib = contributions(eigenvalues, eigenvectors, x)  # [n, k, r]
    sorted_contrib = contrib.gather(2, order[None].expand_as(contrib))
    cum = sorted_contrib.cumsum(-1)  # [n, k, r]
    r = eigenvalues.shape[1]
    idx = torch.tensor([min(max(k, 1), r) - 1 for k in ks], device=cum.device)
    out = cum.index_select(2, idx)  # [n, k, n_ks]
    zero = torch.tensor([k <= 0 for k in ks], device=cum.device)
    return torch.where(zero, torch.zeros_like(out), out)


def log_spaced_ks(r: int, n: int = 24) -> tuple[int, ...]:
    """0, 1, 2, ... r on a roughly logarithmic grid (the truncation curve's x axis)."""
    ks = {0, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 50, 100, 200, 300, 500, r}
    ks.update(round(math.exp(t * math.log(r) / (n - 1))) for t in range(n))
    return tuple(sorted(k for k in ks if 0 <= k <= r))
