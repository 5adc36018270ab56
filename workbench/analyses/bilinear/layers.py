"""Bilinear building blocks: the layer g(x) = (W x + b_W) * (V x + b_V) with an output projection P,
and two small models built from it (a one-layer image classifier and a bilinear transformer LM).

Every model here carries a ``name`` and a ``fingerprint()`` (SHA-256 of its state dict and
architecture), so it runs through :func:`workbench.run_analysis` and the result cache like a
:class:`~workbench.HookedModel` does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


def state_fingerprint(module: nn.Module, arch: dict) -> str:
    """SHA-256 over the architecture and every tensor of the state dict (name, dtype, shape, bytes)."""
    h = hashlib.sha256(repr(sorted(arch.items())).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class _Fingerprinted(nn.Module):
    """Adds ``name``, ``arch`` (constructor arguments) and a cached ``fingerprint()``."""

    kind = "bilinear"

    def __init__(self, name: str | None, **arch):
        super().__init__()
        self.arch = arch
        self.name = name or f"{self.kind}({', '.join(f'{k}={v}' for k, v in arch.items())})"
        self._fp: tuple[tuple[int, ...], str] | None = None

    def fingerprint(self) -> str:
        """Stable id of the current weights; recomputed only after a parameter changed in place."""
        versions = tuple(p._version for p in self.parameters())
        if self._fp is None or self._fp[0] != versions:
            self._fp = (versions, state_fingerprint(self, {"kind": self.kind, **self.arch}))
        return self._fp[1]


@dataclass(frozen=True)
class BilinearWeights:
    """One bilinear layer in homogeneous form: out = P ((W x~) * (V x~)) + b_P with x~ = [x, 1] if biased.

    ``W``, ``V`` [d_hidden, d_in (+1)], ``P`` [d_out, d_hidden]; ``input_labels`` name the input
    coordinates (pixels, 'bias', ...); ``output_labels`` the outputs (classes, d_model dims).
    """

    W: Float[Tensor, "d_hidden d_in"]
    V: Float[Tensor, "d_hidden d_in"]
    P: Float[Tensor, "d_out d_hidden"]
    b_P: Float[Tensor, " d_out"] | None
    biased: bool  # the last input coordinate is the constant 1

    @property
    def d_in(self) -> int:
        return self.W.shape[1]

    @property
    def d_hidden(self) -> int:
        return self.W.shape[0]


class BilinearMLP(_Fingerprinted):
    """g(x) = (W x + b_W) * (V x + b_V), then the output projection P (``d_out=None``: no projection)."""

    kind = "bilinear_mlp"

    def __init__(self, d_in: int, d_hidden: int, d_out: int | None = None, *, bias: bool = False, name: str | None = None):
        super().__init__(name, d_in=d_in, d_hidden=d_hidden, d_out=d_out, bias=bias)
        self.W = nn.Linear(d_in, d_hidden, bias=bias)
        self.V = nn.Linear(d_in, d_hidden, bias=bias)
        self.P = nn.Linear(d_hidden, d_out, bias=False) if d_out is not None else None

    @classmethod
    def from_weights(
        cls, W: Float[Tensor, "d_hidden d_in"], V: Float[Tensor, "d_hidden d_in"],
        P: Float[Tensor, "d_out d_hidden"] | None = None, *, name: str | None = None,
    ) -> BilinearMLP:
        """A bias-free layer holding copies of the given matrices (in their dtype), e.g. a planted one."""
        if W.ndim != 2 or W.shape != V.shape or (P is not None and (P.ndim != 2 or P.shape[1] != W.shape[0])):
            from ...errors import InputError

            raise InputError(f"need W, V [d_hidden, d_in] of one shape and P [d_out, d_hidden]; got W {tuple(W.shape)}, "
                             f"V {tuple(V.shape)}, P {None if P is None else tuple(P.shape)}")
        layer = cls(W.shape[1], W.shape[0], None if P is None else P.shape[0], name=name).to(W.dtype)
        with torch.no_grad():
            layer.W.weight.copy_(W)
            layer.V.weight.copy_(V)
            if P is not None and layer.P is not None:  # (made with d_out exactly when P is given)
                layer.P.weight.copy_(P)
        return layer

    def hidden(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_hidden"]:
        return self.W(x) * self.V(x)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        g = self.hidden(x)
        return self.P(g) if self.P is not None else g

    def weights(self) -> BilinearWeights:
        """The layer as plain tensors, the bias folded in as an extra constant input coordinate."""
        W, V = self.W.weight.detach(), self.V.weight.detach()
        if self.arch["bias"]:
            W = torch.cat([W, self.W.bias.detach()[:, None]], 1)  # [h, d+1]
            V = torch.cat([V, self.V.bias.detach()[:, None]], 1)
        P = self.P.weight.detach() if self.P is not None else torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
        return BilinearWeights(W, V, P, None, bool(self.arch["bias"]))


class BilinearClassifier(_Fingerprinted):
    """A one-layer image classifier: flattened pixels -> bilinear layer -> class logits (the paper's MNIST model).

    ``image_shape`` lets analyses show eigenvectors as images; ``classes`` names the outputs;
    ``dataset`` ('digits:<seed>:<test_fraction>') tells analyses which held-out data to score it on.
    """

    kind = "bilinear_classifier"

    def __init__(self, image_shape: tuple[int, int] = (8, 8), d_hidden: int = 64, n_classes: int = 10,
                 *, bias: bool = False, classes: tuple[str, ...] | None = None, dataset: str | None = None,
                 name: str | None = None):
        super().__init__(name, image_shape=tuple(image_shape), d_hidden=d_hidden, n_classes=n_classes, bias=bias,
                         classes=tuple(classes) if classes else None, dataset=dataset)
        self.image_shape = tuple(image_shape)
        self.classes = tuple(classes) if classes else tuple(str(i) for i in range(n_classes))
        self.mlp = BilinearMLP(image_shape[0] * image_shape[1], d_hidden, n_classes, bias=bias)

    def forward(self, x: Float[Tensor, " batch *pixels"]) -> Float[Tensor, "batch n_classes"]:
        return self.mlp(x.flatten(1))

    def weights(self) -> BilinearWeights:
        return self.mlp.weights()

    def input_labels(self) -> list[str]:
        h, w = self.image_shape
        return [f"({r},{c})" for r in range(h) for c in range(w)] + (["bias"] if self.arch["bias"] else [])

    def output_labels(self) -> list[str]:
        return list(self.classes)


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a bilinear MLP (no nonlinearity anywhere)."""

    def __init__(self, d_model: int, n_heads: int, d_hidden: int):
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
        self.norm2 = nn.RMSNorm(d_model)
        self.mlp = BilinearMLP(d_model, d_hidden, d_model)

    def forward(self, x: Tensor, mask: Tensor, mlp_inputs: list | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        normed = self.norm2(x)
        if mlp_inputs is not None:  # the bilinear layer's input: the attention output, normed
            mlp_inputs.append(normed.detach())
        return x + self.mlp(normed)


class BilinearLM(_Fingerprinted):
    """A small bilinear transformer language model over a character vocabulary.

    ``vocab`` is the string of characters (token i = ``vocab[i]``). Embedding and
    unembedding are separate; positions are learned.
    """

    kind = "bilinear_lm"

    def __init__(self, vocab: str, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_hidden: int = 128,
                 n_ctx: int = 64, *, name: str | None = None):
        super().__init__(name, vocab=vocab, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_hidden=d_hidden, n_ctx=n_ctx)
        self.vocab = vocab
        self.embed = nn.Embedding(len(vocab), d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_hidden) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model)
        self.unembed = nn.Linear(d_model, len(vocab), bias=False)

    def encode(self, text: str) -> Int[Tensor, " pos"]:
        index = {c: i for i, c in enumerate(self.vocab)}
        return torch.tensor([index[c] for c in text if c in index], dtype=torch.long)

    def forward(self, tokens: Int[Tensor, "batch pos"], *, mlp_inputs: list | None = None) -> Float[Tensor, "batch pos vocab"]:
        n = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(n, device=tokens.device))  # [batch, pos, d_model]
        mask = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)  # True = may not attend
        for block in self.blocks:
            x = block(x, mask, mlp_inputs)
        return self.unembed(self.norm(x))

    def block(self, layer: int) -> _Block:
        block = self.blocks[layer]
        assert isinstance(block, _Block)  # (nn.ModuleList items are typed as Module)
        return block

    def layer(self, layer: int) -> BilinearMLP:
        return self.block(layer).mlp

    def output_labels(self) -> list[str]:
        return [f"d{i}" for i in range(self.arch["d_model"])]
