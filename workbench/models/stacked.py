"""Every layer's weights stacked into one tensor, for any weight source with per-layer accessors.

Shared by :class:`~workbench.models.hooked.HookedModel` and
:class:`~workbench.models.checkpoint.CheckpointWeights`: both give ``attention_weights(layer)``,
``mlp_weights(layer)`` and ``info``. Stacking holds all layers in memory at once; the per-layer
accessors are the lean way.
"""

from __future__ import annotations

from typing import Callable

from jaxtyping import Float
from torch import Tensor

from . import weights as W
from .info import ModelInfo


class StackedWeights:
    """``W_Q`` ... ``W_out`` over every layer, TransformerLens-style."""

    info: ModelInfo

    def attention_weights(self, layer: int) -> W.AttentionWeights:
        raise NotImplementedError

    def mlp_weights(self, layer: int) -> W.MLPWeights:
        raise NotImplementedError

    def _stacked(self, pick: Callable[[int], Tensor | None]) -> Tensor:
        found = [pick(layer) for layer in range(self.info.n_layers)]
        return W.stack([t for t in found if t is not None])  # W_gate is asked for only when every layer is gated

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stacked(lambda l: self.attention_weights(l).W_Q)

    @property
    def W_K(self) -> Float[Tensor, "layer kv_head d_model d_head"]:
        """Key weights per key/value head (not expanded; see ``attention_weights(expand_kv=True)``)."""
        return self._stacked(lambda l: self.attention_weights(l).W_K)

    @property
    def W_V(self) -> Float[Tensor, "layer kv_head d_model d_head"]:
        return self._stacked(lambda l: self.attention_weights(l).W_V)

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._stacked(lambda l: self.attention_weights(l).W_O)

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stacked(lambda l: self.mlp_weights(l).W_in)

    @property
    def W_gate(self) -> Float[Tensor, "layer d_model d_mlp"] | None:
        gated = self.info.gated_mlp
        return self._stacked(lambda l: self.mlp_weights(l).W_gate) if gated else None

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stacked(lambda l: self.mlp_weights(l).W_out)
