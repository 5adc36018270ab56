"""What can be loaded on this machine right now, without the network."""

from __future__ import annotations

import os

from .._paths import cache_root
from ..errors import ModelLoadError
from . import gguf
from .tiny import TINY_MODELS


def available_models(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of ``name``, ``kind``, ``ready`` and ``note`` for every model loadable offline."""
    rows = []
    try:
        path = gguf.embedded_gguf_path()
        converted = any((cache_root(cache_dir) / "models").glob(f"{path.stem}-*"))
        note = f"SmolLM2-135M-Instruct (Q4_1 GGUF in {path.parent.name}); " + (
            "converted copy cached" if converted else "first load dequantizes it (~20 s)"
        )
        rows.append({"name": gguf.EMBEDDED_NAME, "kind": "embedded", "ready": True, "note": note})
    except ModelLoadError as exc:
        rows.append({"name": gguf.EMBEDDED_NAME, "kind": "embedded", "ready": False, "note": str(exc)})
    for name, (_, description) in TINY_MODELS.items():
        rows.append({"name": name, "kind": "tiny", "ready": True, "note": description})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                rows.append({"name": repo.repo_id, "kind": "hub (cached)", "ready": True, "note": str(repo.repo_path)})
    except Exception:  # no HF cache folder yet: nothing to list
        pass
    return rows
