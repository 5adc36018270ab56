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

import torch


def _round(value: float, digits: int = 7) -> str:
    return f"{value:.{digits}e}"


@torch.no_grad()
def scan_weights(hf_model) -> tuple[str, list[str]]:
    """``(fingerprint, names of parameters holding NaN or inf)`` in one pass over the weights."""
    digest = hashlib.sha256()
    nonfinite = []
    config = hf_model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation_autoset"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in hf_model.named_parameters():
        flat = param.detach().reshape(-1)
        total = flat.sum(dtype=torch.float64).item()
        norm = torch.linalg.vector_norm(flat, dtype=torch.float64).item()
        if not math.isfinite(total + norm):
            nonfinite.append(name.replace("._original_component", ""))  # the HF name, without the bridge's wrapping
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{_round(total)}|{_round(norm)}".encode())
    return digest.hexdigest()[:20], nonfinite
