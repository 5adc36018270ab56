"""What every model the analyses read shares: the derived accessors, written once over a few raw reads.

:class:`~workbench.models.hooked.HookedModel` (a loaded model) and :class:`~workbench.models.checkpoint.CheckpointWeights`
(a checkpoint read shard by shard) both derive from :class:`ModelBase` and implement only the raw reads:
``attention_weights``, ``mlp_weights``, ``expert_weights``, ``norm_bias``, ``_norm_weight`` and ``_qk_norm_params``.
Everything built on them — effective gains with the family's offset, per-head q/k-norm gains, the
effective (norm-folded) matrices of :mod:`~workbench.models.writes`, the layer index check and every layer's
weights stacked TransformerLens-style — lives here, so both give the same numbers by construction.
"""

from __future__ import annotations

from typing import Callable

from jaxtyping import Float
from torch import Tensor

from ..errors import InputError
from . import weights as W
from . import writes
from .facts import ModelFacts
from .tokens import Tokenization


class ModelBase(Tokenization):
    """Derived accessors over a subclass's raw reads (see the module docstring)."""

    facts: ModelFacts  # the model's facts, one record (models/facts.py)

    @property
    def info(self) -> ModelFacts:
        """The same record as :attr:`facts`, under the name it had when the shape facts were a record of their own
        (kept for user code; the workbench itself reads ``facts``)."""
        return self.facts

    @property
    def arch(self) -> ModelFacts:
        """The same record as :attr:`facts`, under the name it had when the family facts were a record of their
        own (kept for user code; the workbench itself reads ``facts``)."""
        return self.facts

    # ------------------------------------------------------------ raw reads
    def attention_weights(self, layer: int, *, expand_kv: bool = False) -> W.AttentionWeights:
        raise NotImplementedError

    def mlp_weights(self, layer: int) -> W.MLPWeights:
        raise NotImplementedError

    def expert_weights(self, layer: int) -> W.ExpertWeights:
        raise NotImplementedError

    def norm_bias(self, layer: int | None, before: str = "attn", *, post: bool = False) -> Tensor | None:
        raise NotImplementedError

    def _norm_weight(self, layer: int | None, sublayer: str, post: bool) -> Tensor | None:
        """The stored weight of the norm in front of ``sublayer`` (``post``: on its output) of ``layer`` (already
        checked), or of the final norm (``layer=None``); None when there is none."""
        raise NotImplementedError

    def _qk_norm_params(self, layer: int) -> tuple[Tensor, Tensor] | None:
        """The stored query / key norm weights of ``layer`` (already checked), or None."""
        raise NotImplementedError

    # -------------------------------------------------------- derived, once
    def _layer(self, layer: int) -> int:
        if not -self.facts.n_layers <= layer < self.facts.n_layers:
            raise InputError(f"layer {layer} out of range: {self.name} has {self.facts.n_layers} layers")
        return layer % self.facts.n_layers

    def _gain(self, stored: Tensor | None) -> Tensor | None:
        return None if stored is None else stored + self.facts.gain_offset

    def norm_weight(self, layer: int, sublayer: str, *, post: bool = False) -> Tensor | None:
        """The stored weight of a block norm (a view on a loaded model: edit it to edit the model; the effective
        gain is this plus ``facts.gain_offset``): in front of ``sublayer`` or (``post=True``) on its output."""
        if sublayer not in W.NORMS:
            raise InputError(f"sublayer must be one of {sorted(W.NORMS)}, got {sublayer!r}")
        return self._norm_weight(self._layer(layer), sublayer, post)

    def norm_gain(self, layer: int | None, before: str = "attn") -> Tensor | None:
        """Effective gain of the norm in front of ``layer``'s attention (``before="attn"``) or MLP (``"mlp"``), or
        of the final norm (``layer=None``): the stored weight plus the family's offset (Gemma: ``1 + w``).
        None when there is none (post-norm-only or non-parametric norms). Weight analyses fold it into what
        it feeds."""
        if before not in W.NORMS:
            raise InputError(f"before must be one of {sorted(W.NORMS)}, got {before!r}")
        return self._gain(self._norm_weight(None if layer is None else self._layer(layer), before, False))

    def output_norm_gain(self, layer: int, sublayer: str = "attn") -> Tensor | None:
        """Effective gain of the norm on ``sublayer``'s output (sandwich / post-norm families), or None."""
        return self._gain(self.norm_weight(layer, sublayer, post=True)) if self.facts.post_norms else None

    def qk_norm_gains(self, layer: int) -> tuple[Float[Tensor, "head d_head"], Float[Tensor, "kv_head d_head"]] | None:
        """Effective gains of the query / key norms per head, or None when the model has none."""
        found = self._qk_norm_params(self._layer(layer)) if self.facts.attention.qk_norm else None
        if found is None:
            return None
        f = self.facts.layers[self._layer(layer)]
        return W.per_head_gains(*found, self.facts.gain_offset, f.n_heads, f.n_kv_heads, f.d_head)

    def effective_attention_weights(self, layer: int, *, fold_input_norm: bool = True) -> W.AttentionWeights:
        """Attention weights as they act on the residual stream: input-norm and q/k-norm gains folded into
        W_Q / W_K / W_V, the output norm's gain and the residual multiplier into W_O (models/writes.py)."""
        return writes.effective_attention(self, self._layer(layer), fold_input_norm=fold_input_norm)

    def effective_mlp_weights(self, layer: int, *, fold_input_norm: bool = True) -> W.MLPWeights:
        """MLP weights as they act on the residual stream (see :meth:`effective_attention_weights`)."""
        return writes.effective_mlp(self, self._layer(layer), fold_input_norm=fold_input_norm)

    # ---------------------------------------------- every layer, stacked
    def _stacked(self, pick: Callable[[int], Tensor | None]) -> Tensor:
        found = [pick(layer) for layer in range(self.facts.n_layers)]
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
        gated = all(f.mlp == "gated" for f in self.facts.layers)
        return self._stacked(lambda l: self.mlp_weights(l).W_gate) if gated else None

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stacked(lambda l: self.mlp_weights(l).W_out)
