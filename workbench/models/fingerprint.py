"""A stable identity for a model's current weights (a hash of their bytes), and a NaN/inf check on the way.

The fingerprint is XXH3-128 of the architecture config and, per parameter, its name, shape, dtype and every
byte of its values in row-major order. Any edit that changes a stored value changes it — swapped rows, columns
or heads and exchanged weights included, which sums and norms miss — while the device a model sits on does not:
the bytes are hashed from a contiguous CPU copy made in chunks of at most ``CHUNK_BYTES`` (none at all for a
contiguous CPU tensor), so memory stays bounded by one chunk. XXH3 is not cryptographic: it guards against
accidents (a stale cached result), not against someone forging a collision on purpose.

Non-finite values are found by a sum per parameter (non-finite when a value is; then checked value by value).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
import xxhash

WRAPPER = "._original_component"  # the bridge's wrapping in parameter names; left out so names are HF's own
VOLATILE = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation_autoset")
CHUNK_BYTES = 64 << 20  # the most copied at once (GPU or non-contiguous weights)
SAMPLE_STRIDE = 4099  # prime: a strided sample of a matrix meets (nearly) every row and every column


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
    digest = xxhash.xxh3_128()
    config = {k: v for k, v in config.items() if k not in VOLATILE}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    nonfinite = []
    with _one_thread():
        for name, param in parameters:
            name = name.replace(WRAPPER, "")
            param = param.detach()
            if _has_nonfinite(param):
                nonfinite.append(name)
            digest.update(f"\n{name}|{tuple(param.shape)}|{param.dtype}\n".encode())
            for chunk in _byte_chunks(param):
                digest.update(chunk)
    return digest.hexdigest(), nonfinite


def _has_nonfinite(param: torch.Tensor) -> bool:
    """True when ``param`` holds NaN or inf. A quick look first: the sum in the tensor's own dtype (NaN and inf
    carry through it; it runs at memory speed, where a float32 sum of bfloat16 runs 10x slower), or for float16,
    whose small range a sum would overflow, the extremes. Only a non-finite answer is checked value by value."""
    if not param.is_floating_point() or param.numel() == 0:
        return False
    try:
        if param.dtype == torch.float16:
            low, high = torch.aminmax(param.reshape(-1))
            quick = math.isfinite(low.item()) and math.isfinite(high.item())
        else:
            quick = math.isfinite(param.sum().item())
    except RuntimeError:  # a dtype without these kernels (float8, ...): the exact check
        quick = False
    return not quick and not bool(torch.isfinite(param).all())


@contextmanager
def _one_thread() -> Iterator[None]:
    """The sums on one CPU thread: they are bound by memory speed, and OpenMP threads spinning against other
    processes on a busy machine made them 20x slower (1.5 s instead of 0.06 s for the embedded model)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def _byte_chunks(tensor: torch.Tensor) -> Iterator[memoryview]:
    """The tensor's values as bytes in row-major order, in pieces of at most ``CHUNK_BYTES`` copied to the CPU
    (views only, no copy, for a contiguous CPU tensor). bfloat16 and other dtypes numpy lacks go as raw bytes."""
    if tensor.numel() == 0:
        return
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    if tensor.is_contiguous():
        flat = tensor.reshape(-1)
        step = max(1, CHUNK_BYTES // flat.element_size())
        pieces = (flat[i:i + step] for i in range(0, flat.numel(), step))
    else:  # slabs along the first dimension, each made contiguous on its own
        row = max(1, tensor[0].numel() * tensor.element_size())
        step = max(1, CHUNK_BYTES // row)
        pieces = (tensor[i:i + step].contiguous().reshape(-1) for i in range(0, tensor.shape[0], step))
    for piece in pieces:
        if piece.numel() == 1:  # one value counts as contiguous whatever its stride; the byte view wants stride 1
            piece = piece.as_strided((1,), (1,))
        yield memoryview(piece.cpu().view(torch.uint8).numpy())  # type: ignore[arg-type]  # ndarray is a buffer


@torch.no_grad()
def sample_digest(parameters: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of every ``SAMPLE_STRIDE``-th value of every parameter: a cheap look at the contents of a model
    too big to rescan on every call. A prime stride meets nearly every row and column of a weight matrix, so
    swapping, scaling or overwriting a whole row, column or head is seen; an edit of a few single values
    is seen only where it touches a sampled position."""
    digest = xxhash.xxh3_128()
    for _, param in parameters:
        for chunk in _byte_chunks(param.detach().reshape(-1)[::SAMPLE_STRIDE]):
            digest.update(chunk)
    return digest.hexdigest()
