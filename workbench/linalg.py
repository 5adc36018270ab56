"""Small linear-algebra building blocks shared by analyses."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def singular_values(stack: Float[Tensor, "... m n"]) -> Float[Tensor, "... k"]:
    """Singular values (descending, k = min(m, n)) of a batch of matrices, via the Gram matrix.

    ``eigvalsh`` of the k x k Gram matrix in float64 is ~15x faster than ``svdvals``
    on CPU for the shapes of LM weight matrices and, in float64, as accurate as a
    float32 SVD for every singular value above ~1e-7 of the largest.
    """
    w = stack.double()
    gram = w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w
    return torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0).sqrt().to(stack.dtype)


def effective_rank(values: Float[Tensor, "... r"]) -> Float[Tensor, ...]:
    """exp of the entropy of |v| / sum |v| (Roy & Vetterli), in float64: 1 for one value, r for a flat spectrum.

    For singular values or eigenvalues alike (eigenvalues count by magnitude).
    """
    a = values.abs().double()
    p = a / a.sum(-1, keepdim=True).clamp_min(1e-300)
    return (-(p * p.clamp_min(1e-300).log()).sum(-1)).exp()
