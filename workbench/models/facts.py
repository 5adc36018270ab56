"""A model's facts, as one frozen record: :class:`ModelFacts` (``model.facts``).

What it is (name, source, HF class and family), its shape (layers, widths, vocabulary, context, parameters,
dtype, tokens) and what an analysis must know about its family to compute the right thing (DESIGN.md,
"Architectures"): where norms sit and how they scale, whether attention and MLP read the same residual
(parallel blocks), the MLP's kind, the attention's real form, and per layer (:class:`LayerFacts`) whether it has
softmax attention heads, of which shape, and which MLP. ``measured`` names the facts that were measured on the
model rather than read from the workbench's table or the config; ``checks`` is the load-time self-check's
outcome (:mod:`workbench.models.selfcheck`).

Every fact is held once. The head counts and sizes are per layer (a hybrid's layers differ):
``n_heads`` / ``n_kv_heads`` / ``d_head`` summarise them as the attention layers' (what analyses that need
uniform heads read; the self-check's ``uniform_attention`` / ``uniform_heads`` say whether they are uniform).
The MLP's kind is ``mlp`` (``"plain"``, ``"gated"`` or ``"moe"``), per layer ``layers[l].mlp``.

The record is built in one place, :mod:`workbench.models.architecture`: ``facts_of`` for a loaded model (the
hooked bridge for structure, the HF config for numbers, probes for what the table does not say) and
``facts_from_checkpoint`` for a checkpoint read from its shards without building the model (they agree: tested).
This module holds the record only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .selfcheck import SelfCheck


@dataclass(frozen=True)
class AttentionForm:
    """How a layer turns queries and keys into a pattern, beyond softmax(q k^T / sqrt(d_head))."""

    scale: float  # multiplies q . k before the softmax
    softcap: float | None  # scores -> softcap * tanh(scores / softcap) (Gemma 2)
    sliding_window: tuple[int | None, ...]  # per layer: keys further back than this are masked (None: all)
    alibi: bool  # linear position biases added to the scores (BLOOM, some Falcons)
    rotary: bool  # rotary position embedding of q and k (on all or part of each head)
    qk_norm: str | None  # "head", "full" or None: queries and keys are normalised before the product
    qk_norm_centred: bool = False  # the q/k norm is a LayerNorm (subtracts the mean; Cohere), not an RMS norm


@dataclass(frozen=True)
class LayerFacts:
    """What one layer is: analyses run on the layers where they are defined and say which they skipped."""

    kind: str  # "full", "sliding window", "chunked", "linear attention" (state space, gated delta, ...),
    # "convolution" (a gated short convolution mixing nearby tokens: LFM2) or "none"
    rope: bool  # queries and keys are rotated (False: a no-RoPE layer, or no rotary embedding at all)
    n_heads: int  # query heads (0 without softmax attention)
    n_kv_heads: int
    d_head: int
    mlp: str  # "plain", "gated", "moe" or "none"

    @property
    def attention(self) -> bool:
        """True for softmax attention with heads (full, sliding window or chunked)."""
        return self.kind in ("full", "sliding window", "chunked")


NO_HEADS = LayerFacts(kind="none", rope=False, n_heads=0, n_kv_heads=0, d_head=0, mlp="none")


@dataclass(frozen=True)
class ModelFacts:
    """Everything the workbench knows about a model, once (see the module docstring)."""

    # what it is
    name: str
    source: str  # embedded, tiny, folder, gguf, hub, memory
    architecture: str  # HF class, e.g. LlamaForCausalLM
    family: str  # HF model_type, e.g. "gemma2"
    known: bool  # the family is in the workbench's table (its facts were checked there)
    # its shape
    n_layers: int
    d_model: int
    d_mlp: int  # the MLP's hidden width as stored (one expert's in a mixture of experts)
    d_vocab: int  # rows of the embedding
    n_ctx: int
    n_params: int
    dtype: str  # the weights' dtype, e.g. "float32"
    tied_embeddings: bool
    bos_token: str | None
    eos_token: str | None
    # the family's facts
    parallel_blocks: bool  # attention and MLP both read the block's input (GPT-J, GPT-NeoX, Phi-2, Falcon)
    pre_norms: bool  # a norm in front of each sublayer
    shared_input_norm: bool  # parallel blocks whose attention and MLP read one norm (GPT-J, Phi-2, Falcon)
    post_norms: bool  # a norm on each sublayer's output before it joins the residual (Gemma 2/3, OLMo 2)
    norm: str  # "rms", "layernorm" or "nonparametric" (LayerNorm without gain or bias, OLMo)
    gain_offset: float  # a norm multiplies by (gain_offset + stored weight): 1 for Gemma, else 0
    norm_eps: float
    embed_scale: float  # token embeddings are multiplied by this before the first block
    residual_multiplier: float  # each sublayer's output is multiplied by this before it is added (Granite)
    residual_from_norm: bool  # the skip connection carries the normed stream, not the stream (some BLOOMs)
    mlp: str  # "plain", "gated" or "moe" (any layer with experts); per layer in ``layers``
    act_fn: str  # the MLP's activation (HF name)
    n_experts: int  # 0 unless mixture of experts
    experts_per_token: int
    shared_expert: bool  # an always-on expert beside the routed ones (Qwen2-MoE)
    attention: AttentionForm
    layers: tuple[LayerFacts, ...] = ()  # per layer, never read from block 0 alone
    qk_norm_eps: float = 1e-6
    measured: tuple[str, ...] = ()  # facts measured on the model rather than read from the table or config
    checks: SelfCheck | None = None  # the load-time self-check (models/selfcheck.py)

    # ------------------------------------------------------- per-layer summaries
    @property
    def attention_layers(self) -> list[int]:
        """Layers with softmax attention heads (all of them, except in hybrids)."""
        return [l for l, f in enumerate(self.layers) if f.attention]

    @property
    def moe_layers(self) -> list[int]:
        """Layers whose MLP is a mixture of experts."""
        return [l for l, f in enumerate(self.layers) if f.mlp == "moe"]

    def _first_attention(self) -> LayerFacts:
        """The first attention layer's facts (one without heads when no layer has softmax heads)."""
        return next((f for f in self.layers if f.attention), NO_HEADS)

    @property
    def n_heads(self) -> int:
        """Query heads of the attention layers (the first one's; 0 when no layer has softmax heads)."""
        return self._first_attention().n_heads

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads of the attention layers (== ``n_heads`` unless grouped-query attention)."""
        return self._first_attention().n_kv_heads

    @property
    def d_head(self) -> int:
        """Head size of the attention layers."""
        return self._first_attention().d_head

    @property
    def grouped_query(self) -> bool:
        """True when several query heads share one key/value head."""
        return self.n_kv_heads != self.n_heads

    @property
    def heads_per_kv(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // max(self.n_kv_heads, 1)

    def for_layers(self, layers: Sequence[int]) -> ModelFacts:
        """The facts of a model made of ``layers`` alone (a layer range of this one), per-layer facts kept."""
        windows = self.attention.sliding_window
        attention = self.attention
        if len(windows) == self.n_layers:
            attention = replace(attention, sliding_window=tuple(windows[l] for l in layers))
        return replace(self, n_layers=len(layers), attention=attention,
                       layers=tuple(self.layers[l] for l in layers) if self.layers else ())

    # ------------------------------------------------------------- shown
    def to_dict(self, *, checks: bool = True) -> dict:
        """Every fact as plain JSON values (what a Result's ``meta`` holds), with the per-layer summaries
        ``n_heads``, ``n_kv_heads``, ``d_head``; ``checks``: each identity's outcome in words (left out with
        ``checks=False``, e.g. for a weights-only source, which has none)."""
        out = asdict(replace(self, checks=None))
        del out["checks"]
        out.update(n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, d_head=self.d_head)
        if checks:
            out["checks"] = None if self.checks is None else {n: i.describe() for n, i in self.checks.identities.items()}
        return json.loads(json.dumps(out))

    def describe(self, *, checks: bool = True) -> list[tuple[str, str]]:
        """Human-readable lines for tables and reports: the model and its shape, the family's facts, which were
        measured, and (``checks``) the outcome of each identity of the load-time self-check."""
        a = self.attention
        heads = (f"{self.n_heads} heads ({self.n_kv_heads} key/value) of {self.d_head}" if self.attention_layers
                 else "no attention heads")
        norms = " + ".join(p for p, on in (("pre", self.pre_norms), ("post", self.post_norms)) if on) or "none"
        mlp = self.mlp if self.mlp != "moe" else (
            f"mixture of {self.n_experts} experts, top-{self.experts_per_token}"
            + (" + shared expert" if self.shared_expert else ""))
        extras = [name for name, on in (("soft-capped", a.softcap), ("ALiBi", a.alibi), ("rotary", a.rotary),
                                        (f"{a.qk_norm} q/k norm", a.qk_norm),
                                        ("sliding window", any(w is not None for w in a.sliding_window))) if on]
        return [
            ("model", f"{self.name} ({self.source})"),
            ("architecture", f"{self.architecture}: {self.n_layers} layers, d_model {self.d_model}, {heads}, "
                             f"d_mlp {self.d_mlp}, vocabulary {self.d_vocab}, context {self.n_ctx}"),
            ("parameters", f"{self.n_params:,} ({self.dtype}" + (", tied embeddings)" if self.tied_embeddings else ")")),
            ("family", self.family + ("" if self.known else " (not in the workbench's table: facts measured, see below)")),
            ("block", "parallel attention + MLP" if self.parallel_blocks else "sequential attention -> MLP"),
            ("norms", f"{norms}, {self.norm}" + (", gain 1 + w" if self.gain_offset else "")),
            ("MLP", f"{mlp}, {self.act_fn}"),
            ("attention", f"scale {a.scale:.4g}" + (", " + ", ".join(extras) if extras else "")),
        ] + ([("residual", "the skip connection carries the normed stream")] if self.residual_from_norm else []) \
          + ([("residual multiplier", f"{self.residual_multiplier:g}")] if self.residual_multiplier != 1 else []) \
          + ([("embedding scale", f"{self.embed_scale:.4g}")] if self.embed_scale != 1 else []) \
          + self._describe_layers() \
          + [("facts measured", ", ".join(self.measured) or "none (all read from the table and the config)")] \
          + ((self.checks.describe() if self.checks is not None else [("self-check", "not run (weights only)")])
             if checks else [])

    def _describe_layers(self) -> list[tuple[str, str]]:
        """Per-layer structure, one line per kind of layer (``layers 0-3,5``)."""
        groups: dict[str, list[int]] = {}
        for l, f in enumerate(self.layers):
            text = f.kind + ("" if f.rope or not self.attention.rotary or not f.attention else ", no RoPE")
            if f.attention:
                text += f", {f.n_heads} heads / {f.n_kv_heads} kv of {f.d_head}"
            text += f", {f.mlp} MLP" if f.mlp != "moe" else ", experts"
            groups.setdefault(text, []).append(l)
        if len(groups) <= 1:
            return []
        return [(f"layers {layer_span(ls)}", text) for text, ls in groups.items()]


def layer_span(layers: list[int] | tuple[int, ...]) -> str:
    """Layer indices as runs: ``0-3,5,7-9``."""
    if not layers:
        return "none"
    runs, start = [], layers[0]
    for i, a in enumerate(layers):
        if i + 1 == len(layers) or layers[i + 1] != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = layers[i + 1] if i + 1 < len(layers) else a
    return ",".join(runs)
