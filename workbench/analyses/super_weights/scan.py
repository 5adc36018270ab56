"""Streaming statistics of one forward pass: per-layer spikes without caching activations.

Hooks on every layer's MLP hidden activation (the input X of the down projection
``W_out``) and the MLP's write into the residual stream Y (after the output norm in sandwich-norm
families such as Gemma 2/3 and OLMo 2, where that norm's gain is what makes the spike) keep only
small summaries: per-channel maxima of |.|,
the position and channel of the largest |Y|, and which input channel k contributes
most to that output, ``X[pos, k] * W_out[k, j]``. X is held from its hook until the
same layer's output hook and then dropped, so at most one layer's activations are
alive beyond what the forward pass itself holds.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ...errors import UnsupportedModelError
from ...models import hook_names as hn


def require_mlp_hooks(model) -> None:
    """Raise :class:`UnsupportedModelError` unless every layer exposes W_out and its MLP hooks."""
    names = set(model.hook_names())
    for layer in range(model.facts.n_layers):
        missing = [n for n in (hn.mlp_post(layer), hn.mlp_out(layer)) if n not in names]
        if missing:
            raise UnsupportedModelError(
                f"{model.name} has no MLP hook point {missing[0]!r}; super-weight detection needs each layer's "
                "MLP hidden activation and output (a model with an MLP down projection, e.g. Llama, GPT-2, Mistral)"
            )
        model.mlp_weights(layer)  # raises UnsupportedModelError when W_out is not exposed


@dataclass
class ScanStats:
    """What one streaming pass keeps, per layer (``L`` layers)."""

    in_channel_max: Float[Tensor, "L d_mlp"]  # max |X| per input channel over batch and positions
    out_channel_max: Float[Tensor, "L d_model"]  # max |Y| per output channel
    in_spike: Int[Tensor, "L 3"]  # (batch, pos, channel) of max |X|
    out_spike: Int[Tensor, "L 3"]  # (batch, pos, channel j) of max |Y|
    out_value: Float[Tensor, " L"]  # signed Y at the output spike
    top_col: Int[Tensor, " L"]  # k = argmax_k |X[b, pos, k] * W_out[k, j]| at the output spike
    top_input: Float[Tensor, " L"]  # X[b, pos, k]
    top_contribution: Float[Tensor, " L"]  # X[b, pos, k] * W_out[k, j]
    raw_value: Float[Tensor, " L"]  # the MLP's own output (X W_out + b_out, before any output norm) at the spike
    resid_channel_max: Float[Tensor, "Lp1 d_model"] | None  # max |residual| per channel: embed, after each layer

    @property
    def resid(self) -> Float[Tensor, "Lp1 d_model"]:
        """``resid_channel_max`` of a pass that recorded the residual stream (an error for one that did not)."""
        if self.resid_channel_max is None:
            raise RuntimeError("this streaming pass did not record the residual stream")
        return self.resid_channel_max

    @property
    def in_max(self) -> Tensor:
        return self.in_channel_max.amax(-1)

    @property
    def out_max(self) -> Tensor:
        return self.out_channel_max.amax(-1)

    @property
    def in_ratio(self) -> Tensor:
        """Peak-to-typical ratio of X per layer: top channel max / median channel max."""
        return self.in_max / self.in_channel_max.median(-1).values.clamp_min(1e-12)

    @property
    def out_ratio(self) -> Tensor:
        return self.out_max / self.out_channel_max.median(-1).values.clamp_min(1e-12)

    @property
    def share(self) -> Tensor:
        """|top contribution| / |MLP output at the spike|: how much of the spike one weight explains. Measured
        before the output norm, which scales every input channel's part at a position alike."""
        return self.top_contribution.abs() / self.raw_value.abs().clamp_min(1e-12)


def _masked_abs(t: Tensor, mask: Tensor | None) -> Tensor:
    a = t.detach().abs().float()  # [batch, pos, d]
    return a if mask is None else a * mask[..., None].to(a.dtype)


def _argmax3(a: Float[Tensor, "batch pos d"]) -> tuple[Tensor, Tensor]:
    value, flat = a.flatten().max(0)
    return value, torch.stack(torch.unravel_index(flat, a.shape))  # [3] (batch, pos, channel)


class StreamingRecorder:
    """Hooks that fold each layer's activations into running maxima; install with :meth:`attach`.

    ``mlp``: record X / Y spikes (needs ``W_out``); ``resid``: record max |residual|
    per channel before layer 0 and after every layer. Several forward passes (batch
    chunks) accumulate: maxima are kept, spikes are replaced only by larger ones.
    ``mask`` (set before each pass): [batch, pos] with 1 for real tokens.
    """

    def __init__(self, model, *, mlp: bool = True, resid: bool = True):
        facts = model.facts
        self.model, self.mlp, self.resid = model, mlp, resid
        self.n_layers = facts.n_layers
        self.mask: Tensor | None = None
        L, dev = facts.n_layers, torch.device("cpu")
        self.in_channel_max = torch.zeros(L, facts.d_mlp, device=dev)
        self.out_channel_max = torch.zeros(L, facts.d_model, device=dev)
        self.in_spike = torch.zeros(L, 3, dtype=torch.long)
        self.out_spike = torch.zeros(L, 3, dtype=torch.long)
        self.out_value = torch.zeros(L)
        self.top_col = torch.zeros(L, dtype=torch.long)
        self.top_input = torch.zeros(L)
        self.top_contribution = torch.zeros(L)
        self.raw_value = torch.zeros(L)
        self.resid_channel_max = torch.zeros(L + 1, facts.d_model)
        self._held: dict[int, Tensor] = {}  # layer -> X, only between its hooks
        self._offset = 0  # batch index offset of the current chunk

    # ---------------------------------------------------------------- hooks
    def _on_mlp_in(self, layer: int):
        def hook(x: Tensor, hook=None):
            a = _masked_abs(x, self.mask)  # [batch, pos, d_mlp]
            value, where = _argmax3(a)
            chan = a.amax((0, 1)).cpu()  # [d_mlp]
            if value.item() > self.in_channel_max[layer].max().item():
                self.in_spike[layer] = where.cpu() + torch.tensor([self._offset, 0, 0])
            torch.maximum(self.in_channel_max[layer], chan, out=self.in_channel_max[layer])
            self._held[layer] = x.detach()
            return None

        return hook

    def _on_mlp_out(self, layer: int):
        def hook(y: Tensor, hook=None):
            x = self._held.pop(layer)
            a = _masked_abs(y, self.mask)  # [batch, pos, d_model]
            value, (b, p, j) = _argmax3(a)
            if value.item() > self.out_channel_max[layer].max().item():
                # read when a spike grows, not held for every layer: an offloaded model reads it back from disk
                weights = self.model.mlp_weights(layer)
                contrib = x[b, p].float() * weights.W_out[:, j].float().to(x.device)  # [d_mlp]: X_k * W_out[k, j]
                k = contrib.abs().argmax()
                self.out_spike[layer] = torch.stack([b + self._offset, p, j]).cpu()
                self.out_value[layer] = y[b, p, j].float().cpu()
                self.top_col[layer] = k.cpu()
                self.top_input[layer] = x[b, p, k].float().cpu()
                self.top_contribution[layer] = contrib[k].cpu()
                b_out = weights.b_out  # the MLP's own output at the spike, before any output norm:
                self.raw_value[layer] = (contrib.sum() + (b_out[j].float() if b_out is not None else 0.0)).cpu()
            torch.maximum(self.out_channel_max[layer], a.amax((0, 1)).cpu(), out=self.out_channel_max[layer])
            return None

        return hook

    def _on_resid(self, index: int):
        def hook(r: Tensor, hook=None):
            chan = _masked_abs(r, self.mask).amax((0, 1)).cpu()  # [d_model]
            torch.maximum(self.resid_channel_max[index], chan, out=self.resid_channel_max[index])
            return None

        return hook

    def hooks(self) -> list[tuple[str, object]]:
        out = []
        for layer in range(self.n_layers):
            if self.mlp:
                out += [(hn.mlp_post(layer), self._on_mlp_in(layer)), (hn.mlp_out(layer), self._on_mlp_out(layer))]
            if self.resid:
                out.append((hn.resid_post(layer), self._on_resid(layer + 1)))
        if self.resid:
            out.append((hn.resid_pre(0), self._on_resid(0)))
        return out

    @contextmanager
    def attach(self) -> Iterator[StreamingRecorder]:
        with self.model.hooks(self.hooks()):
            try:
                yield self
            finally:
                self._held.clear()

    def run(self, tokens: Tensor, mask: Tensor | None = None, *, offset: int = 0) -> Tensor:
        """One forward pass of ``tokens`` [batch, pos] with the hooks on; returns the logits."""
        self.mask, self._offset = mask, offset
        with self.attach(), torch.no_grad():
            return self.model(tokens, attention_mask=mask)

    def stats(self) -> ScanStats:
        return ScanStats(
            self.in_channel_max.clone(), self.out_channel_max.clone(), self.in_spike.clone(), self.out_spike.clone(),
            self.out_value.clone(), self.top_col.clone(), self.top_input.clone(), self.top_contribution.clone(),
            self.raw_value.clone(), self.resid_channel_max.clone() if self.resid else None,
        )


def scan(model, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"] | None = None) -> ScanStats:
    """One forward pass with streaming hooks: per-layer spike statistics (see :class:`ScanStats`)."""
    recorder = StreamingRecorder(model)
    recorder.run(tokens, mask)
    return recorder.stats()


def spiking_layers(stats: ScanStats, in_factor: float, out_factor: float) -> Tensor:
    """Bool [L]: layers whose X and Y both stand out from their own channels.

    The rule is relative to the layer itself, so it transfers across models and sizes
    (a 2-layer model has no meaningful median across layers): the largest channel
    maximum must be at least ``factor`` times the median channel maximum, for the MLP
    input (``in_factor``) and output (``out_factor``).
    """
    return (stats.in_ratio >= in_factor) & (stats.out_ratio >= out_factor)

