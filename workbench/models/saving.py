"""``HookedModel.save``: the hooked model back to a plain Hugging Face folder.

Booting the bridge wraps the HF modules in place, so the model's own ``save_pretrained`` sees every
weight under several names (and, for fused projections, split copies beside the originals) and
refuses. The weights a model of this config really has are the ones whose names, with the bridge's
``._original_component`` segments removed, match a freshly built HF model's; those are put into a
skeleton built on the meta device (no second copy of the weights) and saved from there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ._atomic import atomic_folder

WRAPPER = "._original_component"


def plain_state_dict(hf_model) -> dict[str, torch.Tensor]:
    """Every weight and buffer under its HF name (the first of a tensor's names wins)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in hf_model.state_dict().items():
        out.setdefault(name.replace(WRAPPER, ""), tensor)
    return out


def save_model(model, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM

    folder = folder.expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder} already exists and is not an empty folder; save to a new folder")
    if folder.is_dir():
        folder.rmdir()  # an empty folder is replaced by the finished one
    config = model.hf_model.config
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    weights = plain_state_dict(model.hf_model)
    wanted = skeleton.state_dict()
    missing = [k for k in wanted if k not in weights]
    if missing:
        raise InputError(f"cannot map {model.name}'s weights back to its Hugging Face layout ({missing[0]} is missing)")
    skeleton.load_state_dict({k: weights[k].detach().to("cpu") for k in wanted}, assign=True, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        skeleton.tie_weights()

    def build(tmp: Path) -> None:
        skeleton.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)

    return atomic_folder(folder, build)
