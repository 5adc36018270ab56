"""Block-wise asymmetric round-to-nearest (RTN) weight quantization, batched over whole matrices.

A matrix [R, C] is cut into square tiles of ``block`` x ``block`` elements (clipped to
the matrix size; ragged edge tiles are kept, padding never enters the statistics).
Each tile gets its own range [lo, hi] and ``2**bits`` evenly spaced levels. With
``clip_z``, every tile's range is first narrowed to mean ± clip_z x std, so a few
outliers (e.g. a super weight) stop inflating the step size of their whole tile;
the clipped outliers are quantized to the range ends (and can be restored afterwards).
Everything is reshapes and reductions over a batch of stacked matrices: no Python
loop over weights or tiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError


@torch.no_grad()
def blockwise_rtn(
    w: Float[Tensor, "*batch rows cols"], bits: int, block: int, *, clip_z: float | None = None
) -> Float[Tensor, "*batch rows cols"]:
    """Quantize and de-quantize ``w`` tile by tile; returns a new tensor of ``w``'s shape and dtype."""
    if not 1 <= bits <= 16:
        raise InputError(f"bits must lie in 1..16, got {bits}")
    if block < 1:
        raise InputError(f"block size must be positive, got {block}")
    if clip_z is not None and clip_z <= 0:
        raise InputError(f"clip_z must be positive, got {clip_z}")
    *batch, R, C = w.shape
    x = w.reshape(-1, R, C)  # [B, R, C]
    # Whole matrices per chunk: on a CPU a chunk that fits in cache beats one pass over everything.
    per_chunk = max(1, (CHUNK_ELEMENTS if x.device.type == "cpu" else CHUNK_ELEMENTS * 256) // (R * C))
    out = torch.cat([_rtn(x[i : i + per_chunk], bits, block, clip_z) for i in range(0, x.shape[0], per_chunk)])
    return out.reshape(*batch, R, C).to(w.dtype)


CHUNK_ELEMENTS = 1 << 20  # matrices per chunk on a CPU: about 4 MB of float32


def _rtn(x: Float[Tensor, "B R C"], bits: int, block: int, clip_z: float | None) -> Float[Tensor, "B R C"]:
    B, R, C = x.shape
    br, bc = min(block, R), min(block, C)
    pr, pc = (-R) % br, (-C) % bc
    x = x.float()
    if pr or pc:  # edge copies stay inside the ragged tile, so its min / max do not change
        x = F.pad(x, (0, pc, 0, pr), mode="replicate")
    Rp, Cp = x.shape[1:]
    tiles = x.view(B, Rp // br, br, Cp // bc, bc)  # a view: tile (i, j) = tiles[:, i, :, j, :]
    lo = tiles.amin(4, keepdim=True).amin(2, keepdim=True)  # [B, nr, 1, nc, 1]
    hi = tiles.amax(4, keepdim=True).amax(2, keepdim=True)
    if clip_z is not None:
        mean, std = _tile_moments(tiles, R, C, br, bc) if (pr or pc) else (
            tiles.mean((2, 4), keepdim=True), tiles.std((2, 4), keepdim=True, correction=0))
        lo = torch.maximum(lo, mean - clip_z * std)
        hi = torch.minimum(hi, mean + clip_z * std)
    levels = 2**bits - 1
    step = (hi - lo).clamp_min_(torch.finfo(torch.float32).tiny).div_(levels)
    # Codes clamped to [0, levels] after rounding = values clamped to [lo, hi] before (integer bounds).
    q = (tiles - lo).div_(step).round_().clamp_(0, levels).mul_(step).add_(lo)  # one temporary, then in place
    return q.view(B, Rp, Cp)[:, :R, :C]


def _tile_moments(tiles: Tensor, R: int, C: int, br: int, bc: int) -> tuple[Tensor, Tensor]:
    """Mean and std of each tile over its real entries only (padding excluded)."""
    B, nr, _, nc, _ = tiles.shape
    rows = (torch.arange(nr * br, device=tiles.device) < R).view(1, nr, br, 1, 1)
    cols = (torch.arange(nc * bc, device=tiles.device) < C).view(1, 1, 1, nc, bc)
    mask = (rows & cols).to(tiles.dtype)  # [1, nr, br, nc, bc]
    n = mask.sum((2, 4), keepdim=True)
    mean = (tiles * mask).sum((2, 4), keepdim=True) / n
    var = ((tiles - mean) ** 2 * mask).sum((2, 4), keepdim=True) / n
    return mean, var.sqrt()
