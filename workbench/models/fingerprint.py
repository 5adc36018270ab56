"""A cheap, stable identity for a model's current weights, and a NaN/inf check on the way.

Hashes the architecture config plus, per parameter, its name, shape, dtype and two
rounded float64 reductions (sum and L2 norm). That is one pass over the
weights, no copies; editing any weight by more than rounding noise changes it,
while the device a model sits on does not (reductions are rounded to 7 digits
so CPU and GPU summation orders agree).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable

import torch


def _round(value: float, digits: int = 7) -> str:
    return f"{value:.{digits}e}"


WRAPPER = "._original_component"  # the bridge's wrapping in parameter names; left out so names are HF's own
VOLATILE = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation_autoset")


def scan_weights(hf_model, parameters: Iterable[tuple[str, torch.Tensor]] | None = None) -> tuple[str, list[str]]:
    """``(fingerprint, names of parameters holding NaN or inf)`` in one pass over the weights.

    ``parameters``: the (name, tensor) pairs to hash, default ``hf_model.named_parameters()`` (an offloaded
    model passes its weights read back one at a time)."""
    named = hf_model.named_parameters() if parameters is None else parameters
    return scan_parameters(hf_model.config.to_dict(), named)


@torch.no_grad()
def scan_parameters(config: dict, parameters: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, list[str]]:
    """The same from a config dict and (HF name, tensor) pairs in the model's parameter order: what a model
    loaded in memory and a checkpoint read shard by shard (``wb.load_weights``) both hash, so they agree."""
    digest = hashlib.sha256()
    nonfinite = []
    config = {k: v for k, v in config.items() if k not in VOLATILE}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in parameters:
        name = name.replace(WRAPPER, "")
        flat = param.detach().reshape(-1)
        total = flat.sum(dtype=torch.float64).item()
        norm = torch.linalg.vector_norm(flat, dtype=torch.float64).item()
        if not math.isfinite(total + norm):
            nonfinite.append(name)
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{_round(total)}|{_round(norm)}".encode())
    return digest.hexdigest()[:20], nonfinite
