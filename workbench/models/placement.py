"""Which accelerate device maps the workbench runs, and the refusal of the one it does not: a GPU mixed with
CPU or disk offload.

accelerate places each module of a ``device_map`` on a GPU, in CPU memory or on disk. Maps over GPUs only, and
maps over CPU and disk only, run (the latter tested here: every hooked analysis equals the in-memory run,
``tests/models/test_offload.py``). A map that mixes a GPU with CPU or disk is refused by TransformerLens 4.3's
bridge when it boots (its note: likely fine, verified only without a GPU), and nothing here has run one on a GPU
either. Rather than let the bridge's ValueError surface after a long load, the workbench refuses the map itself,
as early as it can tell: a dict map before anything is loaded, a map accelerate made (``"auto"``) when it is
known, right after ``from_pretrained`` — and says what to do instead. ``benchmarks/device_check.py`` records
whether the bridge would be right on such a map when a GPU is at hand (its step "GPU + CPU device map").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UnsupportedModelError

OFFLOAD = ("cpu", "disk")

INSTEAD = (
    "instead, either (1) GPUs only: device_map='auto', max_memory={0: '70GiB', 1: '70GiB'} (no 'cpu' entry; the GPUs "
    "must hold the model, or the rest would go to disk), or (2) CPU memory and disk only: device_map='auto', "
    "max_memory={'cpu': '30GiB'} (every analysis then runs on the CPU, layer by layer), or (3) for the weight-only "
    "analyses (overview, head composition) of any size on a GPU: wb.load_weights(folder, device='cuda')")


def _is_gpu(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True  # accelerate's GPU index
    text = str(value).lower()
    return text.startswith(("cuda", "xpu", "npu", "mps"))


def mixes_gpu_and_offload(values: Iterable[Any]) -> bool:
    """True when ``values`` (a device map's targets) hold a GPU and CPU or disk."""
    values = list(values)
    return any(_is_gpu(v) for v in values) and any(str(v).lower() in OFFLOAD for v in values)


def _counts(device_map: Mapping[str, Any]) -> str:
    gpu = sum(_is_gpu(v) for v in device_map.values())
    off = {kind: sum(str(v).lower() == kind for v in device_map.values()) for kind in OFFLOAD}
    return f"{gpu} module(s) on a GPU, {off['cpu']} in CPU memory, {off['disk']} on disk"


def check_device_map(device_map: Any) -> None:
    """Before loading: refuse a dict ``device_map`` that mixes a GPU with CPU or disk."""
    if isinstance(device_map, Mapping) and mixes_gpu_and_offload(device_map.values()):
        raise UnsupportedModelError(f"device_map puts {_counts(device_map)}: a GPU mixed with CPU or disk offload is "
                                    f"not supported (TransformerLens's bridge refuses it; unverified here); {INSTEAD}")


def check_placement(hf_model: Any) -> None:
    """After ``from_pretrained`` (or for a model dispatched by the caller): refuse the device map accelerate made
    when it mixes a GPU with CPU or disk (``device_map='auto'`` does when the GPUs cannot hold the model)."""
    realized = getattr(hf_model, "hf_device_map", None)
    if isinstance(realized, Mapping) and mixes_gpu_and_offload(realized.values()):
        raise UnsupportedModelError(f"accelerate placed {_counts(realized)}: the GPUs did not hold the whole model, and "
                                    f"a GPU mixed with CPU or disk offload is not supported (TransformerLens's bridge "
                                    f"refuses it; unverified here); {INSTEAD}")
