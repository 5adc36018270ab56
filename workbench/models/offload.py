"""Weights of a model that accelerate dispatched with offload (``wb.load_model(..., device_map=, max_memory=,
offload_folder=)``): reading them, and editing them, while they live on disk or in CPU memory.

Forward passes need nothing from us: accelerate's hooks bring each offloaded module's weights to its
execution device for its own forward and put it back to ``meta`` after, so a model bigger than memory runs
layer by layer, and the workbench's hooks (streaming maxima, patches) run where the layer sits. Outside a
forward, an offloaded parameter is an empty ``meta`` tensor. So:

- a weight accessor reads a module inside :meth:`Offload.onloaded`: its offloaded parameters are filled in
  from accelerate's weights map for the time of the read, then dropped again (the tensors handed out stay
  valid: they own the values read);
- an edit (``with model.restoring(view): view[...] = 0``) must reach the copy the next forward loads:
  :meth:`Offload.pin` puts the read tensor into the weights map's in-memory state dict, which accelerate
  reads before the disk, for the time of the edit; only the matrices being edited are held.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn


def _offloading_hook(module: nn.Module):
    hook = getattr(module, "_hf_hook", None)
    return hook if hook is not None and getattr(hook, "offload", False) and hook.weights_map is not None else None


def is_offloaded(hf_model: nn.Module) -> bool:
    """True when accelerate keeps some of the model's weights off their execution device."""
    return any(_offloading_hook(m) is not None for m in hf_model.modules())


class Offload:
    """The offload bookkeeping of one dispatched model (see the module docstring)."""

    def __init__(self, hf_model: nn.Module):
        self.hf_model: Any = hf_model  # a transformers PreTrainedModel (untyped methods)
        # storage address of a weight read -> (its weights map, its name there, its shape, dtype); no reference to
        # the tensor, so a weight nobody holds any more is freed
        self._origin: dict[int, tuple[Any, str, torch.Size, torch.dtype]] = {}  # Any: accelerate's weights map

    def execution_device(self) -> torch.device:
        """Where token ids must go: the execution device of the input embedding."""
        embed = self.hf_model.get_input_embeddings()
        for module in (embed, self.hf_model):
            hook = getattr(module, "_hf_hook", None)
            if hook is not None and getattr(hook, "execution_device", None) is not None:
                return torch.device(hook.execution_device)
        return embed.weight.device

    @contextmanager
    def onloaded(self, module: nn.Module) -> Iterator[None]:
        """Fill in the offloaded parameters under ``module`` for the block; they go back to ``meta`` after."""
        from accelerate.utils import set_module_tensor_to_device

        filled = []
        for sub in module.modules():
            hook = _offloading_hook(sub)
            if hook is None:
                continue
            for name, param in sub.named_parameters(recurse=False):
                if param.device.type != "meta":
                    continue
                set_module_tensor_to_device(sub, name, hook.execution_device, value=hook.weights_map[name])
                read = getattr(sub, name)  # on the execution device: what the views handed out share
                self._origin[read.untyped_storage().data_ptr()] = (hook.weights_map, name, read.shape, read.dtype)
                filled.append((sub, name))
        try:
            yield
        finally:
            for sub, name in filled:
                set_module_tensor_to_device(sub, name, "meta")

    def pin(self, tensor: Tensor) -> Callable[[], None] | None:
        """Make in-place edits of ``tensor`` (a view of a weight read through :meth:`onloaded`) reach the forward
        passes, until the returned callback is called; None when ``tensor`` is not an offloaded weight."""
        found = self._origin.get(tensor.untyped_storage().data_ptr())
        if found is None:
            return None
        weights_map, name, shape, dtype = found
        storage = tensor.untyped_storage()
        if dtype != tensor.dtype or storage.nbytes() != shape.numel() * dtype.itemsize:
            return None  # an unrelated tensor that reuses a freed weight's address
        whole = torch.empty(0, dtype=dtype, device=tensor.device).set_(storage, 0, shape, _contiguous(shape))
        store, key = weights_map.dataset.state_dict, weights_map.prefix + name
        previous = store.get(key)  # CPU offload: the CPU copy (never edited: the edit goes to ``whole``)
        if previous is whole:  # pinned by an outer edit already
            return None
        store[key] = whole

        def unpin() -> None:
            if previous is None:
                store.pop(key, None)
            else:
                store[key] = previous

        return unpin

    def parameters(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter by name with its values, offloaded ones read one at a time (for fingerprints)."""
        hooks = {name: _offloading_hook(m) for name, m in self.hf_model.named_modules()}
        for name, param in self.hf_model.named_parameters():
            if param.device.type == "meta":
                owner, _, leaf = name.rpartition(".")
                yield name, hooks[owner].weights_map[leaf]
            else:
                yield name, param



def _contiguous(shape: torch.Size) -> tuple[int, ...]:
    """Strides of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
