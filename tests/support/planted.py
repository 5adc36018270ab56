"""Tiny models with planted ground truth that several test files share."""

from __future__ import annotations

import torch

import workbench as wb


def planted_super_weight(name: str = "tiny-llama", layer: int = 1):
    """A tiny model with a super weight in ``layer`` (input channel boosted, weight large), and its
    (layer, row, col)."""
    model = wb.load_model(name)
    mlp = model.mlp_weights(layer)
    col, row = 7, 11
    with torch.no_grad():
        mlp.W_in[:, col] *= 40.0
        mlp.W_out[col, row] = 25.0
    return model, (layer, row, col)
