"""Counter-based random draws: each (probe, step, position) has its own uniform number.

ReAGent's batched execution runs many steps of many probes in one forward pass and speculates past
a probe's stop. With a sequential generator the draws would depend on how steps were chunked; here
every number is a hash of (seed, stream, probe, step, position) — the splitmix64 finaliser, a
bijective mixer with full avalanche (Steele et al. 2014) — so the batched run draws exactly what
the step-by-step loop draws, whatever the chunking, the batch size or the device. That is what makes
the two provably the same algorithm (tests/analyses/attribution/test_attribution.py compares them number for number).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic; int64 multiplication wraps)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)

# independent streams of one probe-step
INIT, REPLACE, UPDATE_TOKENS, CHECK_TOKENS = 0, 1, 2, 3


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: mask the sign bits back out)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def uniform(seed: int, stream: int, probe: Int[Tensor, " rows"], step: Int[Tensor, " rows"],
            width: int) -> Float[Tensor, "rows width"]:
    """U[0, 1) numbers in float64 for each row's (probe, step) and positions 0..width-1 (on CPU)."""
    key = _mix(torch.tensor(seed, dtype=torch.long) * 4 + stream)
    row = _mix(_mix(key ^ probe.long()) ^ step.long())  # [rows]
    z = _mix(row[:, None] ^ torch.arange(width))  # [rows, width]
    return _shr(z, 11).double() / float(1 << 53)  # the top 53 bits: every float64 in [0, 1) on the grid
