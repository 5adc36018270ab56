"""The published super-weight index (Yu et al. 2024) and a comparison of a scan against it."""

from __future__ import annotations

import re
from functools import cache
from collections.abc import Iterable

import pandas as pd

from ..._paths import data_file

INDEX_FILE = "published_super_weights.csv"


@cache
def _index() -> pd.DataFrame:
    return pd.read_csv(data_file(INDEX_FILE), comment="#")


def published_index() -> pd.DataFrame:
    """Every published super weight: model, hf_id, layer, row, col (HF ``down_proj`` [d_model, d_mlp] layout).

    In TransformerLens layout the same weight is ``W_out[layer, col, row]``.
    """
    return _index().copy()


def model_key(name: str) -> str:
    """Lenient model-name key: last path part, lower case, no ``-hf`` suffix, letters and digits only.

    ``meta-llama/Llama-2-7b-hf``, ``Llama-2-7B`` and ``/models/llama-2-7b-hf/`` all give ``llama27b``.
    """
    base = str(name).rstrip("/\\").replace("\\", "/").split("/")[-1].lower()
    base = re.sub(r"[-_.]hf$", "", base)
    return re.sub(r"[^a-z0-9]", "", base)


def published_for(name: str) -> pd.DataFrame | None:
    """The published rows for model ``name`` (matched leniently, see :func:`model_key`), or None."""
    key = model_key(name)
    index = _index()
    hit = index[(index["model"].map(model_key) == key) | (index["hf_id"].map(model_key) == key)]
    return hit.reset_index(drop=True).copy() if len(hit) else None


def compare_published(name: str, found: Iterable[tuple[int, int, int]]) -> pd.DataFrame | None:
    """Published vs found coordinates ``(layer, row, col)`` for model ``name``; None if it is not in the index.

    One row per coordinate in either set, with ``published`` and ``found`` flags.
    """
    pub = published_for(name)
    if pub is None:
        return None
    pub_set = {(int(r.layer), int(r.row), int(r.col)) for r in pub.itertuples()}
    found_set = {tuple(int(v) for v in c) for c in found}
    rows = [
        {"model": pub["model"].iloc[0], "layer": c[0], "row": c[1], "col": c[2], "published": c in pub_set, "found": c in found_set}
        for c in sorted(pub_set | found_set)
    ]
    return pd.DataFrame(rows)
