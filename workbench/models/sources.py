"""Model sources: what a user may pass to ``wb.load_model`` and how each becomes HF objects."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from . import gguf, tiny

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
OFFLINE_CHOICES = (
    "wb.load_model() for the embedded SmolLM2-135M-Instruct, a local HF folder (with config.json), "
    f"a .gguf file, or a tiny random model ({', '.join(tiny.TINY_MODELS)})"
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source. ``kind`` is embedded, tiny, folder, gguf or hub."""

    kind: str
    ref: str
    label: str


def resolve_source(source: str | os.PathLike | None) -> ModelSource:
    """Decide what ``source`` names, without loading anything."""
    if source is None or str(source).lower() in {gguf.EMBEDDED_NAME, "embedded", "default"}:
        return ModelSource("embedded", gguf.EMBEDDED_NAME, gguf.EMBEDDED_NAME)
    text = str(source)
    if text in tiny.TINY_MODELS:
        return ModelSource("tiny", text, text)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return ModelSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"folder {path} has no config.json, so it is not a Hugging Face model folder; "
                "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"
            )
        return ModelSource("folder", str(path.resolve()), path.name)
    if path.exists() or text.startswith((".", "/", "~")) or not HUB_ID.match(text):
        raise ModelLoadError(f"unknown model {text!r}: not a model folder, .gguf file or hub id. Offline, use {OFFLINE_CHOICES}")
    return ModelSource("hub", text, text)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """True when the HF hub answers at all (any HTTP status), asked through huggingface_hub's own HTTP session, so
    that what the user set up for it applies: ``HTTPS_PROXY`` and the other proxy variables, a client factory
    (``huggingface_hub.set_client_factory``), certificates, and ``HF_HUB_OFFLINE`` (then no request is made)."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # no route, proxy refusal, timeout, offline mode: all mean "not reachable"
        return False
    return True


SHARED_OPTIONS = ("revision", "trust_remote_code")  # what the tokenizer is loaded with too


def _from_pretrained(ref: str, local_files_only: bool = False, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shared = {k: v for k, v in kwargs.items() if k in SHARED_OPTIONS}
    tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_files_only, **shared)
    model = AutoModelForCausalLM.from_pretrained(ref, local_files_only=local_files_only, **kwargs)
    return model, tokenizer


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def _check_folder(folder: Path) -> None:
    """A model folder needs weights and a tokenizer beside its config: say which is missing, in one line."""
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ModelLoadError(f"folder {folder} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
                             "write them with model.save_pretrained(folder)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"folder {folder} has no tokenizer (tokenizer.json or tokenizer_config.json); "
                             "write it with tokenizer.save_pretrained(folder)")


def _load_folder(folder: str, **kwargs):
    _check_folder(Path(folder))
    try:
        return _from_pretrained(folder, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for bad folders
        raise ModelLoadError(f"cannot load the model folder {folder}: {exc}") from exc


def _load_hub(name: str, **kwargs):
    try:  # already in the local HF cache: no network needed
        return _from_pretrained(name, local_files_only=True, **kwargs)
    except Exception:  # not cached (OSError) or a broken cache entry: try the hub
        pass
    if not _hub_reachable():
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached (offline). "
            f"Use {OFFLINE_CHOICES}"
        )
    try:
        return _from_pretrained(name, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {name!r} from the Hugging Face hub: {exc}") from exc


def _load_gguf(path: Path, root: Path, **kwargs):
    folder = gguf.dequantized_folder(path, root)
    try:
        return _load_folder(str(folder), **kwargs)
    except ModelLoadError as exc:
        if gguf.folder_is_intact(folder):  # the folder is fine: the error is about kwargs, device, ...
            raise
        gguf.discard_folder(folder, exc)  # a damaged conversion: rebuild it once
        return _load_folder(str(gguf.dequantized_folder(path, root)), **kwargs)


def load_hf(source: ModelSource, root: Path, *, dtype: torch.dtype | None, device_map, seed: int,
            revision: str | None = None, trust_remote_code: bool = False, **placement):
    """Return ``(hf_model, tokenizer)`` for a resolved source, in eval mode. ``placement``: accelerate's
    ``max_memory`` / ``offload_folder``, with ``device_map``. ``revision`` and ``trust_remote_code`` reach
    ``from_pretrained`` (model and tokenizer) for folders and hub ids; no other source has either."""
    kwargs = {k: v for k, v in placement.items() if v is not None}
    if source.kind in ("folder", "hub"):
        kwargs["trust_remote_code"] = bool(trust_remote_code)
        if revision is not None:
            kwargs["revision"] = revision
    elif revision is not None:
        raise ModelLoadError(f"revision= picks a version of a hub model or folder; {source.label} ({source.kind}) has none")
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    if source.kind == "tiny":
        model = tiny.tiny_model(source.ref, seed=seed)
        if dtype is not None:
            model = model.to(dtype)
        return model, tiny.byte_tokenizer(root)
    if source.kind == "embedded":
        model, tokenizer = _load_gguf(gguf.embedded_gguf_path(), root, **kwargs)
    elif source.kind == "gguf":
        model, tokenizer = _load_gguf(Path(source.ref), root, **kwargs)
    elif source.kind == "folder":
        model, tokenizer = _load_folder(source.ref, **kwargs)
    else:
        model, tokenizer = _load_hub(source.ref, **kwargs)
    return model.eval(), tokenizer
