"""HookedModel: the one object analyses receive. A thin, explicit layer over TransformerBridge."""

from __future__ import annotations

import difflib
import math
import os
import signal
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InputError, UnsupportedModelError
from . import weights as W
from . import writes
from .base import ModelBase
from .fingerprint import sample_digest, scan_weights
from .facts import ModelFacts
from .offload import Offload, is_offloaded
from .selfcheck import self_check
from .tokens import Inputs

HookFn = Callable[..., Tensor | None]
EXACT_CHECK_PARAMS = 300_000_000  # up to this size a cached call rescans every weight (edits through .data)
Names = str | Sequence[str] | Callable[[str], bool] | None


class HookedModel(ModelBase):
    """A loaded language model with hooks, tokenization and raw weight access.

    Built by :func:`workbench.load_model`. Parameters are frozen (``requires_grad``
    off): gradients with respect to inputs still flow, parameter gradients are
    never accumulated by accident.
    """

    def __init__(self, bridge, hf_model, tokenizer, facts: ModelFacts):
        self.bridge = bridge  # transformer_lens TransformerBridge (owns the hooks)
        self.hf_model = hf_model  # the patched HF model inside the bridge
        self.tokenizer = tokenizer  # the HF tokenizer as loaded (BOS is added by us, explicitly)
        self.facts = facts  # shape and family facts (models/facts.py, built by models/architecture.py: facts_of)
        self._hook_names = frozenset(bridge.hook_dict)
        self._weight_check: tuple[tuple[int, ...], tuple[str, list[str]]] | None = None
        self._weight_sample: str | None = None  # big models: a hash of a content sample taken with the last scan
        # accelerate keeps some weights on disk / in CPU memory (models/offload.py): reads and edits go through it
        self._offload = Offload(hf_model) if is_offloaded(hf_model) else None
        # the identities the decompositions rely on, measured on this model (models/selfcheck.py)
        self.facts = replace(self.facts, checks=self_check(self))
        self._refuse_at_load()

    def _refuse_at_load(self) -> None:
        """A model no analysis could be right on is refused here, not by each analysis: an encoder (its logits
        see later tokens), or one with neither attention heads nor MLPs (a pure state-space model)."""
        checks = self.facts.checks
        causal = checks.identities.get("causal") if checks is not None else None
        if causal is not None and causal.error is not None and math.isfinite(causal.error) and not causal.passed:
            raise UnsupportedModelError(
                f"{self.name} is not a causal language model: changing the last token moved earlier logits (error "
                f"{causal.error}), as in an encoder such as BERT; the workbench analyses decoder-only models")
        if not any(f.attention or f.mlp != "none" for f in self.facts.layers):
            kinds = ", ".join(sorted({f.kind for f in self.facts.layers}))
            raise UnsupportedModelError(
                f"{self.name} has no attention heads and no MLPs (layers: {kinds}), e.g. a pure state-space model; "
                "the workbench's analyses decompose heads and MLPs: use a transformer or a hybrid model instead")

    def require_identities(self, needs: Iterable[str], what: str) -> None:
        """Raise :class:`UnsupportedModelError` unless every identity in ``needs`` held in the load-time self-check
        (``model.facts.checks``), naming the identity that failed and the error measured."""
        checks = self.facts.checks
        if checks is None:
            raise UnsupportedModelError(f"{self.name} was not self-checked; load it with wb.load_model")
        if any(i.error is not None and not math.isfinite(i.error) for i in checks.identities.values()):
            self.require_finite_weights()  # NaN weights make every identity NaN: say what is really wrong
        checks.require(tuple(needs), self.name, what)

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def device(self) -> torch.device:
        """Device of the input embedding (where token ids must live)."""
        if self._offload is not None:
            return self._offload.execution_device()
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def offloaded(self) -> bool:
        """True when accelerate keeps some weights off their execution device (``device_map`` with offload)."""
        return self._offload is not None

    def _reading(self, module):
        """Offloaded weights under ``module`` filled in for a read (models/offload.py); nothing otherwise."""
        return self._offload.onloaded(module) if self._offload is not None else nullcontext()

    def _parameters(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter with its values (offloaded ones read back one at a time)."""
        return self._offload.parameters() if self._offload is not None else self.hf_model.named_parameters()

    def fingerprint(self, *, verify: bool = False) -> str:
        """Stable id of the current weights: a hash of every weight's bytes (models/fingerprint.py).

        Recomputed when a parameter's version counter moved, i.e. after any in-place edit through the
        parameter or a view of it (the weight accessors, ``param[...] = x`` under ``no_grad``): such edits are
        always seen, whatever the model's size. Edits through ``.data`` move no counter: ``verify=True`` (what
        every cached call does) also looks at the contents. Up to ``EXACT_CHECK_PARAMS`` parameters it rescans
        every byte, so every edit is seen; beyond that it hashes every 4099th value of every parameter, which
        sees an edit of whole rows, columns or heads (swapped, scaled, zeroed) but sees an edit of a few single
        values only where one is sampled — on a big model, edit single values through the parameter or the views.
        """
        if verify and self._contents_moved():
            self._weight_check = None
        return self._check_weights()[0]

    def _contents_moved(self) -> bool:
        if self._weight_check is None:
            return True
        if self.facts.n_params <= EXACT_CHECK_PARAMS:
            return True  # an exact rescan is cheap enough
        return sample_digest(self._parameters()) != self._weight_sample

    def require_finite_weights(self) -> None:
        """Raise :class:`UnsupportedModelError` naming every parameter that holds NaN or inf."""
        bad = self._check_weights()[1]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise UnsupportedModelError(
                f"{self.name} has NaN or infinite weights in {shown}; weight analyses need finite weights. "
                "Reload the model, or undo the edit that produced them"
            )

    def _check_weights(self) -> tuple[str, list[str]]:
        versions = tuple(p._version for p in self.hf_model.parameters())
        if self._weight_check is None or self._weight_check[0] != versions:
            self._weight_check = (versions, scan_weights(self.hf_model, self._parameters()))
            if self.facts.n_params > EXACT_CHECK_PARAMS:
                self._weight_sample = sample_digest(self._parameters())
        return self._weight_check[1]

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter by its Hugging Face name (frozen; edit through the weight accessors)."""
        return self.hf_model.named_parameters()

    def parameter_sizes(self) -> Iterator[tuple[str, int]]:
        """(HF name, number of values) of every parameter, without reading any (``CheckpointWeights`` has the same)."""
        for name, param in self.hf_model.named_parameters():
            yield name.replace("._original_component", ""), param.numel()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights are stored in."""
        return next(self.hf_model.parameters()).dtype

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model as it is now (edits included) and its tokenizer to a new ``folder`` that
        ``wb.load_model(folder)`` reloads with the same fingerprint, so cached results carry over.

        The folder is built aside and renamed into place: an interrupted save leaves no half-written folder."""
        from .saving import save_model

        return save_model(self, Path(folder))

    def hook_names(self) -> list[str]:
        """Every hook point name, sorted."""
        return sorted(self._hook_names)

    def __repr__(self) -> str:
        i = self.facts
        return (
            f"HookedModel({i.name!r}: {i.architecture}, {i.n_layers} layers, d_model {i.d_model}, "
            f"{i.n_heads} heads / {i.n_kv_heads} kv, d_mlp {i.d_mlp}, {i.n_params / 1e6:.1f}M params, "
            f"{i.dtype} on {self.device})"
        )

    # -------------------------------------------------------------- forward
    def __call__(
        self, inputs: Inputs, *, prepend_bos: bool | None = None, attention_mask: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits for a prompt or a batch of token ids."""
        tokens = self._as_tokens(inputs, prepend_bos)
        return self.bridge(tokens, attention_mask=attention_mask)

    forward = __call__

    def run_with_cache(
        self, inputs: Inputs, *, names: Names = None, prepend_bos: bool | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and a plain dict of activations, restricted to ``names``.

        ``names``: one hook name, a list of names (checked, with suggestions for typos),
        a predicate on names, or ``None`` for every hook (memory-hungry on long inputs).
        """
        tokens = self._as_tokens(inputs, prepend_bos)
        names_filter = self._names_filter(names)
        logits, cache = self.bridge.run_with_cache(tokens, names_filter=names_filter, return_cache_object=False)
        if isinstance(names_filter, list):  # the bridge adds aliases (hook_out for hook_resid_post, ...)
            return logits, {name: cache[name] for name in names_filter}
        return logits, dict(cache)

    def run_with_hooks(
        self, inputs: Inputs, fwd_hooks: Iterable[tuple[str, HookFn]], *, prepend_bos: bool | None = None
    ) -> Tensor:
        """Logits with forward hooks ``(name, fn(activation, hook))`` applied for this call only."""
        tokens = self._as_tokens(inputs, prepend_bos)
        hooks = [(self.check_hook_name(n), fn) for n, fn in fwd_hooks]
        return self.bridge.run_with_hooks(tokens, fwd_hooks=hooks)

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, HookFn]]) -> Iterator["HookedModel"]:
        """Keep forward hooks on for a ``with`` block; they are removed even on error."""
        handles = []
        points = self.bridge.hook_dict  # built anew on every access (~1 ms): once per block, not per hook
        try:
            for name, fn in fwd_hooks:
                point = points[self.check_hook_name(name)]
                point.add_hook(fn, dir="fwd")
                handles.append(point)
            yield self
        finally:
            for point in handles:
                point.remove_hooks("fwd")

    def check_hook_name(self, name: str) -> str:
        if name not in self._hook_names:
            close = difflib.get_close_matches(name, self._hook_names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see model.hook_names()"
            raise InputError(f"{self.name} has no hook point {name!r}{hint}")
        return name

    def _names_filter(self, names: Names):
        if names is None or callable(names):
            return names
        names = [names] if isinstance(names, str) else list(names)
        return [self.check_hook_name(n) for n in names]

    @contextmanager
    def restoring(self, *weights: Tensor) -> Iterator["HookedModel"]:
        """Undo every in-place edit of ``weights`` on leaving the block, even on error or Ctrl-C (an interrupt
        that lands while the originals are copied back is held until they all are, then raised).

        Pass the weight views you are about to edit (e.g. ``model.mlp_weights(2).W_out``);
        only those are copied, so this costs one copy of the edited matrices::

            W_out = model.mlp_weights(2).W_out
            with model.restoring(W_out), torch.no_grad():
                W_out[90, 507] = 0.0
                damaged = model("Summer is hot. Winter is")
        """
        saved = [(w, w.detach().clone()) for w in weights]
        # an offloaded weight is edited in the copy its next forward loads, held in memory while edited
        unpins = [u for u in (self._offload.pin(w) for w in weights) if u] if self._offload is not None else []
        try:
            yield self
        finally:
            _restore(saved)
            for unpin in unpins:
                unpin()

    def logits(self, *, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
               keep: int | None = None) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits of the plain model (no hooks run: the fast path for many forwards), from token ids or input
        embeddings (:meth:`embed`); ``keep``: only the last ``keep`` positions go through the unembedding."""
        inputs = {"input_ids": input_ids.to(self.device)} if input_ids is not None else {"inputs_embeds": inputs_embeds}
        if keep is None:
            return self.hf_model(**inputs).logits
        try:
            return self.hf_model(**inputs, logits_to_keep=keep).logits
        except TypeError:  # heads without logits_to_keep
            return self.hf_model(**inputs).logits[:, -keep:]

    def embed(self, ids: Tensor) -> Float[Tensor, "... pos d_model"]:
        """Token embeddings as the first layer's ``inputs_embeds`` (before any family's embedding scale)."""
        return self.hf_model.get_input_embeddings()(ids.to(self.device))

    @torch.no_grad()
    def greedy_ids(self, ids: Int[Tensor, " pos"], n: int, *, stop_at_eos: bool = False) -> Int[Tensor, " n"]:
        """``n`` greedy next token ids after ``ids`` (KV-cached generation); fewer if ``stop_at_eos`` and one is EOS."""
        tok = self.tokenizer
        out = self.hf_model.generate(
            ids[None], attention_mask=torch.ones_like(ids[None]), max_new_tokens=n, min_new_tokens=0 if stop_at_eos else n,
            do_sample=False, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        return out[0, len(ids):]

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 20, *, prepend_bos: bool | None = None) -> str:
        """Greedy continuation of ``prompt`` (the new text only)."""
        tokens = self.to_tokens(prompt, prepend_bos=prepend_bos)
        self._check_length(tokens.shape[-1] + max_new_tokens)
        return self.decode(self.greedy_ids(tokens[0], max_new_tokens, stop_at_eos=True))

    # --------------------------------------------------------------- weights
    def attention_weights(self, layer: int, *, expand_kv: bool = False) -> W.AttentionWeights:
        """Raw attention weights of ``layer``; ``expand_kv`` repeats shared K/V heads per query head."""
        with self._reading(self.bridge.blocks[self._layer(layer)]):
            weights = W.attention_weights(self.bridge, self._layer(layer))
        return weights.expanded() if expand_kv else weights

    def mlp_weights(self, layer: int) -> W.MLPWeights:
        """Raw MLP weights of ``layer`` (``W_gate`` only for gated MLPs such as SwiGLU)."""
        if self.facts.layers[self._layer(layer)].mlp == "moe":
            raise UnsupportedModelError(
                f"{self.name}'s MLPs are mixtures of {self.facts.n_experts} experts, with no single W_in / W_out; "
                "use model.expert_weights(layer) for the experts and wb.super_experts(model) for super experts "
                "and the super weights inside them")
        with self._reading(self.bridge.blocks[self._layer(layer)]):
            return W.mlp_weights(self.bridge, self._layer(layer), self.facts.layers[self._layer(layer)].mlp == "gated")

    def expert_weights(self, layer: int) -> W.ExpertWeights:
        """Router, routed experts and shared expert of a mixture-of-experts ``layer`` (views of the parameters)."""
        with self._reading(self.bridge.blocks[self._layer(layer)]):
            found = W.expert_weights(self.bridge, self._layer(layer)) \
                if self.facts.layers[self._layer(layer)].mlp == "moe" else None
        if found is None:
            raise UnsupportedModelError(
                f"{self.name} layer {layer} is not a mixture of experts the workbench can read "
                f"({self.facts.layers[self._layer(layer)].mlp} MLP); use model.mlp_weights(layer) instead")
        return found

    def norm_bias(self, layer: int | None, before: str = "attn", *, post: bool = False) -> Tensor | None:
        """Additive bias of that norm (LayerNorm), or None (RMSNorm has none); ``post=True``: of the norm on
        ``before``'s output (sandwich / post-norm families)."""
        return self._norm_param(layer, before, "bias", post=post)

    def _norm_weight(self, layer: int | None, sublayer: str, post: bool) -> Tensor | None:
        return self._norm_param(layer, sublayer, "weight", post=post)

    def _qk_norm_params(self, layer: int) -> tuple[Tensor, Tensor] | None:
        with self._reading(self.bridge.blocks[layer]):
            return W.qk_norm_params(self.bridge, layer)

    def _norm_param(self, layer: int | None, before: str, name: str, post: bool = False) -> Tensor | None:
        if before not in W.NORMS:
            raise InputError(f"before must be one of {sorted(W.NORMS)}, got {before!r}")
        if layer is not None and not post and before == "mlp" and self.facts.shared_input_norm:
            before = "attn"  # parallel blocks with one norm (GPT-J, Phi-2, Falcon): the MLP reads it too
        with self._reading(self.bridge.ln_final if layer is None else self.bridge.blocks[self._layer(layer)]):
            return W.norm_param(self.bridge, None if layer is None else self._layer(layer), before, name, post=post)

    def mlp_activation(self, pre: Tensor) -> Tensor:
        """The MLP's own activation function (as the family's config names it) applied to ``pre``."""
        from transformers.activations import ACT2FN

        return ACT2FN[self.facts.act_fn](pre)

    # ------------------------------------------------- the residual stream
    def require_additive_residual(self) -> None:
        """Raise :class:`UnsupportedModelError` unless the residual stream is the sum of the blocks' writes."""
        writes.require_additive_residual(self)

    def own_output_name(self, layer: int, sublayer: str = "mlp") -> str:
        """Hook carrying ``sublayer``'s own output, before any output norm or residual multiplier."""
        return writes.own_output_name(self, self._layer(layer), sublayer)

    def head_write_names(self, layer: int) -> list[str]:
        """Activations :meth:`head_writes` needs from a forward pass."""
        return writes.head_write_names(self, self._layer(layer))

    def expert_writes(self, layer: int, x: Tensor):
        """A mixture-of-experts layer's write split over experts, from its normed input ``x`` [token, d_model]
        (``hook_names.mlp_in``): (per-expert writes, shared expert's write, routing weights, hidden activations)."""
        return writes.expert_writes(self, self._layer(layer), x)

    def head_writes(self, layer: int, acts: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-head exact writes [batch, pos, head, d_model] and the rest (biases) [batch, pos, d_model]."""
        return writes.head_writes(self, self._layer(layer), acts)

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        embedding = self.hf_model.get_input_embeddings()
        with self._reading(embedding):
            return embedding.weight.detach()

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        unembedding = self.hf_model.get_output_embeddings()
        with self._reading(unembedding):
            return unembedding.weight.detach().T

@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) until the block ends, then deliver it. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])  # Python's default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _restore(saved: list[tuple[Tensor, Tensor]]) -> None:
    """Copy every original back, whatever signal arrives: an interrupt is held while copying and raised after.
    One that lands before the hold takes effect just starts the (idempotent) copy again."""
    interrupted = None
    while True:
        try:
            with _interrupts_held(), torch.no_grad():
                for weight, original in saved:
                    weight.copy_(original)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted

