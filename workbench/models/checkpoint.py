"""``wb.load_weights(folder)``: a checkpoint's weights read from its safetensors shards, one layer at a time.

The weight-only analyses (overview, head composition) need nothing but weights, so a model far bigger than
memory can be analysed without building it: :class:`CheckpointWeights` answers the same weight accessors as
:class:`~workbench.models.HookedModel` (``attention_weights``, ``mlp_weights``, ``norm_gain``,
``effective_*_weights``, ``W_E`` ...), in the same TransformerLens layout, dtype and strides, so an analysis
computes bit for bit what it computes on the loaded model, and the same fingerprint, so their cached results
are shared.

Memory: every call opens the shards it needs, copies out the few tensors asked for and closes them again. A
shard kept open would keep every page read from it mapped into the process (its resident size grows to the
whole file), so nothing stays open and nothing is cached between calls: peak memory is what the caller holds.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InputError, ModelLoadError, UnsupportedModelError
from . import weights as W
from .architecture import facts_from_checkpoint
from .fingerprint import scan_parameters
from .facts import ModelFacts
from .families import CheckpointLayout, layout_of
from .base import ModelBase

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# what the fingerprint scan may meet besides weights (integer buffers, masks)
SCAN_DTYPES = {**SAFETENSORS_DTYPES, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
               "U8": torch.uint8, "BOOL": torch.bool}


def load_weights(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> "CheckpointWeights":
    """The weights of the Hugging Face checkpoint in ``folder`` (``config.json``, ``*.safetensors``, a tokenizer),
    read lazily from its shards; nothing is loaded until an accessor asks. ``device``: where the tensors
    read are put (e.g. ``"cuda"``: one layer at a time on the GPU)."""
    return CheckpointWeights(folder, device=device)


class CheckpointWeights(ModelBase):
    """A checkpoint's weights with :class:`~workbench.models.HookedModel`'s weight accessors (see the module)."""

    def __init__(self, folder: str | os.PathLike, *, device: str | torch.device = "cpu"):
        from transformers import AutoConfig, AutoTokenizer

        self.folder = Path(folder).expanduser().resolve()
        if not (self.folder / "config.json").is_file():
            raise ModelLoadError(f"{self.folder} has no config.json: wb.load_weights needs a Hugging Face model folder")
        self.config = AutoConfig.from_pretrained(self.folder, local_files_only=True)
        self.layout: CheckpointLayout = layout_of(self.config)  # raises UnsupportedModelError for other families
        self._where = _shard_index(self.folder)  # HF name -> shard file
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self._device = torch.device(device)
        self._scan: tuple[str, list[str]] | None = None  # (fingerprint, non-finite parameters), one pass, kept
        self.facts: ModelFacts = facts_from_checkpoint(
            self.config, self.tokenizer, name=self.folder.name, d_vocab=self._shape(self.layout.embed)[0],
            dtype=str(self._dtype_of(self.layout.embed)).removeprefix("torch."),
            n_params=sum(size for _, size in self.parameter_sizes()))

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.facts.dtype)

    def __repr__(self) -> str:
        i = self.facts
        return (f"CheckpointWeights({i.name!r}: {i.architecture}, {i.n_layers} layers, d_model {i.d_model}, "
                f"{i.n_params / 1e6:.1f}M params, {i.dtype}, read from {self.folder})")

    # ------------------------------------------------------------ shard reads
    def _header(self, name: str) -> dict:
        return self._where[name][1]

    def _shape(self, name: str) -> list[int]:
        if name not in self._where:
            raise UnsupportedModelError(f"{self.folder.name}'s shards hold no {name!r}; the checkpoint does not follow "
                                        f"the {self.config.model_type} layout wb.load_weights expects")
        return self._header(name)["shape"]

    def _dtype_of(self, name: str) -> torch.dtype:
        code = self._header(name)["dtype"]
        if code not in SAFETENSORS_DTYPES:
            raise UnsupportedModelError(f"{name} is stored as {code}; wb.load_weights reads floating-point checkpoints "
                                        "(quantized ones: load them with wb.load_model)")
        return SAFETENSORS_DTYPES[code]

    def has(self, name: str) -> bool:
        return name in self._where

    def read(self, *names: str) -> list[Tensor]:
        """The tensors ``names`` (HF names), copied out of their shards onto the device; shards closed after."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            self._shape(name)  # one clear error for a missing name
            by_file.setdefault(self._where[name][0], []).append(name)
        out: dict[str, Tensor] = {}
        for path, wanted in by_file.items():
            with safe_open(path, framework="pt") as shard:
                for name in wanted:
                    tensor = shard.get_tensor(name)
                    # a copy owns its memory: the shard's mapping (and the pages read) go with the ``with``
                    out[name] = tensor.clone() if self._device.type == "cpu" else tensor.to(self._device)
        return [out[n] for n in names]

    def _optional(self, name: str | None) -> Tensor | None:
        return self.read(name)[0] if name is not None and self.has(name) else None

    # ------------------------------------------------------------- parameters
    def parameter_sizes(self) -> Iterator[tuple[str, int]]:
        """(HF name, number of values) of every parameter, from the shard headers (no weight is read)."""
        for name in self._parameter_names():
            size = 1
            for n in self._shape(name):
                size *= n
            yield name, size

    def _parameter_names(self) -> list[str]:
        """Parameter names in the order the HF model registers them (what the fingerprint hashes), from a
        skeleton built on the meta device (no memory); tied weights once, as ``named_parameters`` gives them."""
        if not hasattr(self, "_names"):
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(self.config)
            self._names = [n for n, _ in skeleton.named_parameters()]
            missing = [n for n in self._names if n not in self._where]
            if missing:
                raise UnsupportedModelError(f"{self.folder.name}'s shards lack {missing[0]!r} (and {len(missing) - 1} "
                                            "more parameters) that its config calls for; is the checkpoint complete?")
        return self._names

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter by its HF name, read one at a time (a full pass over the checkpoint)."""
        for name in self._parameter_names():
            yield name, self.read(name)[0]

    def fingerprint(self, *, verify: bool = False) -> str:
        """The loaded model's fingerprint (same config, names, values): computed once in one pass over every
        weight, kept after (a checkpoint on disk is not edited through this object)."""
        return self._check()[0]

    def require_finite_weights(self) -> None:
        bad = self._check()[1]
        if bad:
            raise UnsupportedModelError(f"{self.name} has NaN or infinite weights in {', '.join(bad[:5])}; "
                                        "weight analyses need finite weights")

    def _check(self) -> tuple[str, list[str]]:
        if self._scan is None:
            self._scan = scan_parameters(self.config.to_dict(), self._read_parameters())
        return self._scan

    def _read_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter, read from its shard into a buffer of its own, in the model's order. Read, not mapped:
        the scan touches every byte, and a mapped shard's pages would stay in the process's resident memory until
        it closed (a 10 GB shard, a 10 GB peak); a read tensor's buffer goes as soon as the scan has hashed it."""
        with ExitStack() as shards:
            opened: dict[Path, tuple[Any, int]] = {}  # shard -> (open file, where its data starts)
            for name in self._parameter_names():
                path, entry = self._where[name]
                if path not in opened:
                    f = shards.enter_context(open(path, "rb"))
                    opened[path] = (f, 8 + int.from_bytes(f.read(8), "little"))
                f, data = opened[path]
                start, end = entry["data_offsets"]
                buffer = bytearray(end - start)
                f.seek(data + start)
                if f.readinto(buffer) != len(buffer):
                    raise ModelLoadError(f"{path.name} ends inside {name}: the shard is truncated")
                dtype = SCAN_DTYPES.get(entry["dtype"])
                if dtype is None:
                    raise UnsupportedModelError(f"{name} is stored as {entry['dtype']}, which the workbench cannot "
                                                "read; load the model with wb.load_model instead")
                yield name, (torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
                             ).reshape(entry["shape"])

    # ----------------------------------------------------------------- weights
    def attention_weights(self, layer: int, *, expand_kv: bool = False) -> W.AttentionWeights:
        """Raw attention weights of ``layer`` in TransformerLens layout (the views a loaded model gives)."""
        L = self.layout
        layer = self._layer(layer)
        i = self.facts.layers[layer]
        q, k, v, o = self.read(*(L.block(layer, f"{m}.weight") for m in (L.q, L.k, L.v, L.o)))
        b_q, b_k, b_v, b_o = (self._optional(L.block(layer, f"{m}.bias")) for m in (L.q, L.k, L.v, L.o))
        d = i.d_head
        heads = lambda w, n: w.reshape(n, d, -1).transpose(1, 2)  # noqa: E731  [n*d_head, d_model] -> [n, d_model, d_head]
        weights = W.AttentionWeights(
            W_Q=heads(q, i.n_heads), W_K=heads(k, i.n_kv_heads), W_V=heads(v, i.n_kv_heads),
            W_O=o.T.reshape(i.n_heads, d, -1),  # [d_model, n*d_head] -> [n, d_head, d_model]
            b_Q=None if b_q is None else b_q.reshape(i.n_heads, d), b_K=None if b_k is None else b_k.reshape(i.n_kv_heads, d),
            b_V=None if b_v is None else b_v.reshape(i.n_kv_heads, d), b_O=b_o)
        return weights.expanded() if expand_kv else weights

    def mlp_weights(self, layer: int) -> W.MLPWeights:
        """Raw MLP weights of ``layer``: W_in, W_gate [d_model, d_mlp], W_out [d_mlp, d_model]."""
        L = self.layout
        layer = self._layer(layer)
        gate, up, down = self.read(*(L.block(layer, f"{m}.weight") for m in (L.gate, L.up, L.down)))
        return W.MLPWeights(W_in=up.T, W_gate=gate.T, W_out=down.T, b_in=None, b_out=None)

    def expert_weights(self, layer: int):
        raise UnsupportedModelError(f"{self.name} has {self.facts.mlp} MLPs, not a mixture of experts")

    def _norm_name(self, layer: int | None, sublayer: str, post: bool) -> str | None:
        if sublayer not in W.NORMS:
            raise InputError(f"before must be one of {sorted(W.NORMS)}, got {sublayer!r}")
        if layer is None:
            return self.layout.final_norm
        names = self.layout.post_norm_names if post else self.layout.pre_norm_names
        name = None if names is None else names[0 if sublayer == "attn" else 1]
        return None if name is None else self.layout.block(self._layer(layer), f"{name}.weight")

    def _norm_weight(self, layer: int | None, sublayer: str, post: bool) -> Tensor | None:
        return self._optional(self._norm_name(layer, sublayer, post))

    def norm_bias(self, layer: int | None, before: str = "attn", *, post: bool = False) -> Tensor | None:
        return None  # the families read from shards use RMS norms (or OLMo's non-parametric LayerNorm): no bias

    def _qk_norm_params(self, layer: int) -> tuple[Tensor, Tensor] | None:
        names = self.layout.qk_norm_names
        if names is None:
            return None
        q, k = self.read(*(self.layout.block(layer, f"{n}.weight") for n in names))
        return q, k

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.read(self.layout.embed)[0]

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        tied = self.facts.tied_embeddings or not self.has(self.layout.unembed)
        return self.read(self.layout.embed if tied else self.layout.unembed)[0].T


def _shard_index(folder: Path) -> dict[str, tuple[Path, dict]]:
    """HF name -> (shard file, its header entry: dtype, shape), from the shard headers only."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors shards; wb.load_weights reads safetensors checkpoints "
                             "(re-save a pytorch_model.bin one with model.save_pretrained(folder))")
    where = {}
    for path in files:
        for name, entry in _header(path).items():
            if name != "__metadata__":
                where[name] = (path, entry)
    return where


def _header(path: Path) -> dict:
    """A safetensors file's JSON header (8-byte little-endian length, then the JSON): names, dtypes, shapes."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size))
