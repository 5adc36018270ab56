"""The self-check every loaded model passes through: the identities the decompositions rely on, measured on
the model in hand on one short prompt.

A table of family facts is never complete, so the facts an analysis uses are checked where it matters, on the
activations of the model itself:

- ``causal``: changing the last token leaves every earlier position's logits as they were (a decoder; an
  encoder such as BERT is refused at load);
- ``logits``: the hooked model's logits equal the model's own (no hook changed the computation);
- ``residual``: each block's attention and MLP writes sum to what the block adds to the residual stream;
- ``head_writes``: the per-head writes (and the bias rest) sum to the attention's write;
- ``qkv``: the effective (norm-folded) W_Q, W_K, W_V reproduce the measured queries, keys and values (after
  any q/k norm; rotary keeps their lengths, so a q/k norm left out shows after it too);
- ``values_mixed``: each head's output is the hooked pattern applied to its values up to one scale per query
  position (what a learned sink, GPT-OSS, does), so its OV circuit is W_V W_O; a gate on the output (Qwen3-Next)
  fails it;
- ``pattern``: the same exactly: the hooked pattern is the one the values are mixed with;
- ``attn_write``: the effective W_O reproduces the attention's measured write;
- ``mlp_read``: the MLP's input is the norm (kind, gain, offset) of the stream it reads: after the attention,
  or the block's input in parallel blocks;
- ``mlp_in``: W_in (and W_gate) through the family's activation reproduce the MLP's measured hidden activation
  from its measured input (dense MLPs; a fused or misread projection fails it); this and ``mlp_write`` compare
  up to 512 channels spread over the width, so a big model's MLP is not copied whole;
- ``mlp_write``: the MLP's hidden activation through W_out reproduces its measured write (dense MLPs);
- ``experts``: the experts' writes sum to the mixture-of-experts write.

Each identity is checked on every layer where it is defined (a linear-attention layer has no heads) and records
its largest relative error. An analysis declares the identities it needs (``Analysis.needs``); one that failed,
or could not be checked, makes it refuse with :class:`UnsupportedModelError` naming the identity and the error
measured. Nothing is computed on an unverified decomposition.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from . import hook_names as hn
from .architecture import layer_span
from .weights import AttentionWeights

IDENTITIES: dict[str, str] = {
    "causal": "each position's logits depend on that position and earlier ones only",
    "logits": "the hooked model's logits equal the model's own",
    "residual": "the attention and MLP writes sum to the residual stream's change",
    "head_writes": "the per-head writes sum to the attention write",
    "qkv": "the effective W_Q, W_K, W_V reproduce the measured queries, keys and values",
    "values_mixed": "each head's output is a mix of its values over key positions (no gate on it)",
    "pattern": "the hooked attention pattern is the one applied to the values",
    "attn_write": "the effective W_O reproduces the measured attention write",
    "mlp_read": "the MLP reads the normed stream the facts say (after attention, or beside it in parallel blocks)",
    "mlp_in": "W_in, W_gate and the activation reproduce the MLP's measured hidden activation",
    "mlp_write": "W_out reproduces the measured MLP write",
    "experts": "the experts' writes sum to the mixture-of-experts write",
    "uniform_attention": "every layer has softmax attention heads of one shape (what stacked head weights need)",
}
PROBE = "The cat sat on the mat, and the dog"  # a short prompt: every layer sees several positions


def tolerance(dtype: torch.dtype) -> float:
    """Largest relative error an identity may show: float32 rounding, or half-precision rounding."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


@dataclass(frozen=True)
class Identity:
    """One identity's outcome: its largest relative error over the layers it was checked on, or why it could not
    be checked (``error`` None)."""

    name: str
    error: float | None
    layers: tuple[int, ...]  # where it was checked
    worst_layer: int | None
    tolerance: float
    problem: str = ""  # why it could not be checked

    @property
    def passed(self) -> bool:
        return self.error is not None and self.error <= self.tolerance

    def describe(self) -> str:
        if self.error is None:
            return f"not checked: {self.problem}"
        where = f" (worst at layer {self.worst_layer})" if self.worst_layer is not None else ""
        verdict = "passed" if self.passed else "FAILED"
        layers = f", layers {layer_span(self.layers)}" if self.layers else ""
        return f"{verdict}: error {self.error:.1e}{where}, tolerance {self.tolerance:.0e}{layers}"


@dataclass(frozen=True)
class SelfCheck:
    """Every identity's outcome on one model, and what the check cost."""

    identities: dict[str, Identity] = field(default_factory=dict)
    seconds: float = 0.0  # what the check took (0 when read from the cache)
    cached: bool = False

    def require(self, needs: tuple[str, ...], model_name: str, what: str) -> None:
        """Raise :class:`UnsupportedModelError` unless every identity in ``needs`` passed on this model (one the
        model has no layer for, ``experts`` on a dense model, is not needed)."""
        for name in needs:
            found = self.identities.get(name)
            if found is not None and not found.passed:
                raise UnsupportedModelError(
                    f"{what} relies on '{IDENTITIES[name]}', which on {model_name} {found.describe()}; "
                    f"the workbench does not compute on an unverified decomposition. Use wb.reagent (needs only the "
                    f"logits) instead, or report the model so its facts can be added")

    def describe(self) -> list[tuple[str, str]]:
        how = "read back (checked at an earlier load)" if self.cached else f"on one short prompt, {self.seconds:.2f} s"
        return [("self-check", how)] + [(f"check: {name}", found.describe()) for name, found in self.identities.items()]


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def self_check(model) -> SelfCheck:
    """The self-check of ``model``: read back when this exact model (the fingerprint of its weights and config)
    was checked before with the same facts and the same checking code (workbench, torch and transformers
    versions, and the sources of the modules the identities run), else run and stored."""
    import hashlib

    import transformers

    from .. import __version__
    from .._paths import cache_root

    here = os.path.dirname(__file__)
    code = hashlib.sha256(repr(model.arch).encode())
    for module in ("selfcheck.py", "writes.py", "weights.py", "base.py", "architecture.py"):
        with open(os.path.join(here, module), "rb") as f:
            code.update(f.read())
    versions = f"{__version__}|{torch.__version__}|{transformers.__version__}|{code.hexdigest()[:16]}"
    path = cache_root() / "selfcheck" / f"{model.fingerprint()}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("versions") == versions:
            return SelfCheck({n: Identity(**{**i, "layers": tuple(i["layers"])}) for n, i in stored["identities"].items()},
                             0.0, cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not checked yet, or a file from another version or a broken write: check again
    found = run_self_check(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"versions": versions, "seconds": found.seconds,
                                   "identities": {n: asdict(i) for n, i in found.identities.items()}}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the check again next time
    return found


def run_self_check(model) -> SelfCheck:
    """Measure every identity on ``model`` (a :class:`~workbench.models.HookedModel`): one hooked forward pass of
    the probe, one plain forward of it and of a copy with another last token, then the identities, layer by layer."""
    start = time.perf_counter()
    tol = tolerance(model.dtype)
    ids = model.to_tokens(PROBE)
    heads = {n for f in model.arch.layers for n in (f.n_heads, f.n_kv_heads)}
    while ids.shape[1] in heads:  # keep [pos, head] and [head, pos] layouts apart (see _per_head)
        ids = torch.cat([ids, ids[:, -1:]], 1)
    layers = range(model.info.n_layers)
    attention = [l for l in layers if model.arch.layers[l].attention]
    names: set[str] = set()
    for l in layers:  # a hook the bridge lacks leaves the identities that need it unchecked, hence failed
        wanted = (hn.resid_pre(l), hn.resid_mid(l), hn.resid_post(l), hn.attn_out(l), hn.mlp_out(l), hn.mlp_in(l),
                  hn.mlp_post(l), hn.attn_q(l), hn.attn_k(l), hn.attn_v(l), hn.attn_z(l), hn.attn_pattern(l),
                  hn.attn_q(l, rotated=True), hn.attn_k(l, rotated=True), _normed(l, "q"), _normed(l, "k"),
                  _own(model, l, "attn"), _own(model, l, "mlp"))
        names |= {n for n in wanted if n is not None and n in model._hook_names}
    store: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(t, hook):
            store[name] = t.detach()
        return hook

    with model.hooks([(n, keep(n)) for n in sorted(names)]), torch.no_grad():
        hooked = model(ids).float()
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.info.d_vocab  # another last token: earlier logits must not move
    with torch.no_grad():
        own, other = model.logits(input_ids=torch.cat([ids, changed])).float()
    acts = {k: v.float() for k, v in store.items()}

    # every identity is present unless the model has no layer of its kind (dense vs experts): absent = not needed
    found: dict[str, Identity] = {
        "causal": Identity("causal", _rel(other[:-1], own[:-1]), (), None, tol),
        "logits": Identity("logits", _rel(hooked[0], own), (), None, tol),
    }
    reads = _Reads(model)
    checks: dict[str, Callable[[int], float]] = {
        "residual": lambda l: _residual(model, acts, l),
        "head_writes": lambda l: _head_writes(model, acts, l),
        "qkv": lambda l: _qkv(model, reads, acts, l),
        "attn_write": lambda l: _attn_write(model, reads, acts, l),
        "values_mixed": lambda l: _values_mixed(reads, acts, l),
        "pattern": lambda l: _pattern(reads, acts, l),
    }
    found.update(_over_layers(checks, attention, tol))
    found["uniform_attention"] = _uniform(model.arch, tol)
    dense = [l for l in layers if model.arch.layers[l].mlp in ("plain", "gated")]
    moe = [l for l in layers if model.arch.layers[l].mlp == "moe"]
    mlps = [l for l in layers if model.arch.layers[l].mlp != "none"]
    if mlps:
        found.update(_over_layers({"mlp_read": lambda l: _mlp_read(model, acts, l)}, mlps, tol))
    if dense:
        found.update(_over_layers({"mlp_in": lambda l: _mlp_in(model, acts, l),
                                   "mlp_write": lambda l: _mlp_write(model, acts, l)}, dense, tol))
    if moe:
        found.update(_over_layers({"experts": lambda l: _experts(model, acts, l)}, moe, tol))
    return SelfCheck(found, time.perf_counter() - start)


class _Reads:
    """Each layer's raw and effective attention weights, read once for all the identities that use them (the
    last layer's only are kept: the identities go layer by layer)."""

    def __init__(self, model):
        self.model = model
        self._raw: dict[int, AttentionWeights] = {}
        self._effective: dict[int, AttentionWeights] = {}

    def raw(self, layer: int) -> AttentionWeights:
        if layer not in self._raw:
            self._raw = {layer: self.model.attention_weights(layer)}
        return self._raw[layer]

    def effective(self, layer: int) -> AttentionWeights:
        if layer not in self._effective:
            self._effective = {layer: self.model.effective_attention_weights(layer)}
        return self._effective[layer]


def _uniform(arch, tol: float) -> Identity:
    """A structural fact, not a measured one: which layers lack softmax heads, or differ in head shape."""
    others = [l for l, f in enumerate(arch.layers) if not f.attention]
    if others:
        kinds = sorted({arch.layers[l].kind for l in others})
        return Identity("uniform_attention", None, (), None, tol,
                        f"layers {layer_span(tuple(others))} are {' / '.join(kinds)}, with no attention heads")
    shapes = {(f.n_heads, f.n_kv_heads, f.d_head) for f in arch.layers}
    if len(shapes) > 1:
        sizes = ", ".join(f"{h}/{k} heads of {d}" for h, k, d in sorted(shapes))
        return Identity("uniform_attention", None, (), None, tol, f"head counts or sizes differ between layers: {sizes}")
    return Identity("uniform_attention", 0.0, tuple(range(len(arch.layers))), None, tol)


def _over_layers(checks: dict[str, Callable[[int], float]], layers: list[int], tol: float) -> dict[str, Identity]:
    """Each identity's largest error over ``layers``, layer by layer (a layer's weights are read once for all of
    them); an identity that cannot be computed on some layer is not checked, and says why."""
    if not layers:
        return {name: Identity(name, None, (), None, tol, "the model has no layer where it is defined") for name in checks}
    errors: dict[str, dict[int, float]] = {name: {} for name in checks}
    problems: dict[str, tuple[int, str]] = {}
    for l in layers:
        for name, check in checks.items():
            if name in problems:
                continue
            try:
                errors[name][l] = check(l)
            except (KeyError, RuntimeError, ValueError, TypeError, UnsupportedModelError, AttributeError, IndexError) as exc:
                problems[name] = (l, f"layer {l}: {type(exc).__name__}: {exc}"[:300])
    found = {}
    for name, by_layer in errors.items():
        if name in problems:
            found[name] = Identity(name, None, tuple(layers), problems[name][0], tol, problems[name][1])
        else:
            worst = max(by_layer, key=lambda l: by_layer[l])
            found[name] = Identity(name, by_layer[worst], tuple(layers), worst, tol)
    return found


def _normed(layer: int, which: str) -> str:
    return f"blocks.{layer}.attn.hook_{which}_normed"


def _own(model, layer: int, sublayer: str) -> str | None:
    try:
        return model.own_output_name(layer, sublayer)
    except UnsupportedModelError:
        return None


def _residual(model, acts, l: int) -> float:
    added = acts[hn.resid_post(l)] - acts[hn.resid_pre(l)]
    return _rel(acts[hn.attn_out(l)] + acts[hn.mlp_out(l)], added)


def _head_writes(model, acts, l: int) -> float:
    heads, rest = model.head_writes(l, acts)
    return _rel(heads.sum(2) + rest, acts[hn.attn_out(l)])


def normalise(model, x: Tensor) -> Tensor:
    """``x`` through a norm without its gain and bias: ``x / rms(x)`` (RMS) or ``(x - mean) / std`` (LayerNorm)."""
    if model.arch.norm != "rms":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + model.arch.norm_eps)


def _qkv(model, reads: _Reads, acts, l: int) -> float:
    """Queries, keys and values from the residual stream through the effective matrices, against the hooks."""
    x = acts[hn.resid_pre(l)]
    raw, eff = reads.raw(l), reads.effective(l)
    ln_bias = None
    if model.arch.pre_norms:
        x = normalise(model, x)
        ln_bias = model.norm_bias(l, "attn")
    gain = model.norm_gain(l, "attn") if model.arch.pre_norms else None
    qk = model.qk_norm_gains(l)
    if model.arch.attention.qk_norm and qk is None:
        raise UnsupportedModelError("the model has query / key norms whose gains the hooked model does not expose")
    errors = []
    for which, w_eff, w_raw, b_eff, b_raw in (("q", eff.W_Q, raw.W_Q, eff.b_Q, raw.b_Q),
                                              ("k", eff.W_K, raw.W_K, eff.b_K, raw.b_K),
                                              ("v", eff.W_V, raw.W_V, eff.b_V, raw.b_V)):
        cols = qk[0 if which == "q" else 1].float() if qk is not None and which != "v" else None
        got = _project(x, w_eff, ln_bias, w_raw if cols is None else w_raw * cols[:, None, :], b_eff)
        hook = {"q": hn.attn_q(l), "k": hn.attn_k(l), "v": hn.attn_v(l)}[which]
        if cols is not None:  # the q/k norm's gain is folded into the matrix; its per-position scale is measured
            rows = w_raw if gain is None else w_raw * gain.to(w_raw.dtype)[:, None]
            got = got / _qk_scale(model, _project(x, rows, ln_bias, w_raw, b_raw))
            hook = _normed(l, which)
        errors.append(_rel(got, _per_head(acts[hook], got.shape)))
        rotated = {"q": hn.attn_q(l, rotated=True), "k": hn.attn_k(l, rotated=True)}.get(which)
        if rotated in acts:  # rotary keeps each head's vector length (up to YaRN's one factor): a q/k norm left out shows
            errors.append(_up_to_scale(got.norm(dim=-1), _per_head(acts[rotated], got.shape).norm(dim=-1)))
    return max(errors)


def _mixed(reads: _Reads, acts, l: int) -> tuple[Tensor, Tensor]:
    """(the pattern [b, head, q, k] applied to the values, the measured head outputs), both [b, pos, head, d_head]."""
    raw = reads.raw(l)
    z = acts[hn.attn_z(l)]
    v = _per_head(acts[hn.attn_v(l)], torch.Size((*z.shape[:2], raw.W_V.shape[0], raw.W_V.shape[-1])))
    v = v.repeat_interleave(raw.W_Q.shape[0] // raw.W_V.shape[0], dim=2)  # shared K/V heads, per query head
    mixed = torch.einsum("bhqk,bkhd->bqhd", acts[hn.attn_pattern(l)], v)
    return mixed, z.reshape(mixed.shape)


def _values_mixed(reads: _Reads, acts, l: int) -> float:
    mixed, z = _mixed(reads, acts, l)
    scale = (mixed * z).sum(-1, keepdim=True) / mixed.square().sum(-1, keepdim=True).clamp_min(1e-30)
    return _rel(scale * mixed, z)


def _pattern(reads: _Reads, acts, l: int) -> float:
    return _rel(*_mixed(reads, acts, l))


def _up_to_scale(a: Tensor, b: Tensor) -> float:
    """Relative error of ``a`` as ``b`` after the one scale that fits best."""
    a, b = a.double(), b.double()
    return _rel(a * (a * b).sum() / a.square().sum().clamp_min(1e-30), b)


def _per_head(t: Tensor, shape: torch.Size) -> Tensor:
    """A hooked query / key / value as [batch, pos, head, d_head]: some bridges give [batch, head, pos, d_head]
    after the q/k norm (the probe's length never equals a head count, so the layouts cannot be confused)."""
    if t.ndim == 4 and t.shape[1] != shape[1]:
        t = t.transpose(1, 2)
    return t.reshape(shape)


def _project(x: Tensor, w: Tensor, ln_bias: Tensor | None, w_bias: Tensor, b: Tensor | None) -> Tensor:
    """``x w`` per head [b, pos, head, d_head], plus a LayerNorm bias through ``w_bias`` and the projection bias."""
    out = torch.einsum("bpd,hde->bphe", x, w.float())
    if ln_bias is not None:
        out = out + torch.einsum("d,hde->he", ln_bias.float(), w_bias.float())
    if b is not None:
        out = out + b.float().reshape(out.shape[-2:])
    return out


def _qk_scale(model, t: Tensor) -> Tensor:
    """The q/k norm's per-position (and per-head, for a head-wise norm) RMS of ``t`` [b, pos, head, d_head]."""
    eps = model.arch.qk_norm_eps
    if model.arch.attention.qk_norm_centred:
        t = t - t.mean(-1, keepdim=True)
    if model.arch.attention.qk_norm == "full":
        return (t.square().mean((-2, -1), keepdim=True) + eps).sqrt()
    return (t.square().mean(-1, keepdim=True) + eps).sqrt()


def _attn_write(model, reads: _Reads, acts, l: int) -> float:
    eff = reads.effective(l)
    write = torch.einsum("bphd,hde->bpe", acts[hn.attn_z(l)], eff.W_O.float())
    if eff.b_O is not None:
        write = write + eff.b_O.float()
    if model.arch.post_norms:  # the output norm's per-position scale is all the weights cannot hold
        out = acts[model.own_output_name(l, "attn")]
        if model.arch.norm != "rms":
            raise UnsupportedModelError("a LayerNorm on the attention's output is not folded into W_O")
        write = write * torch.rsqrt(out.square().mean(-1, keepdim=True) + model.arch.norm_eps)
    return _rel(write, acts[hn.attn_out(l)])


def _mlp_read(model, acts, l: int) -> float:
    stream = acts[hn.resid_pre(l) if model.arch.parallel_blocks else hn.resid_mid(l)]
    if not model.arch.pre_norms:
        return _rel(stream, acts[hn.mlp_in(l)])
    gain, bias = model.norm_gain(l, "mlp"), model.norm_bias(l, "mlp")
    expected = normalise(model, stream) * (1.0 if gain is None else gain.float())
    if bias is not None:
        expected = expected + bias.float()
    return _rel(expected, acts[hn.mlp_in(l)])


def _spread(n: int, most: int = 512) -> Tensor:
    """Up to ``most`` channel indices spread evenly over ``n``: a wrong fact (an activation, a fused projection, a
    gain) moves every channel, so a spread sample shows it without copying a big model's whole MLP to float32."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique()


def _mlp_in(model, acts, l: int) -> float:
    x, mlp = acts[hn.mlp_in(l)], model.mlp_weights(l)
    cols = _spread(mlp.W_in.shape[-1]).to(mlp.W_in.device)
    up = x @ mlp.W_in[:, cols].float() + (mlp.b_in[cols].float() if mlp.b_in is not None else 0)
    hidden = model.mlp_activation(up) if mlp.W_gate is None else \
        model.mlp_activation(x @ mlp.W_gate[:, cols].float()) * up
    return _rel(hidden, acts[hn.mlp_post(l)][..., cols.to(x.device)])


def _mlp_write(model, acts, l: int) -> float:
    mlp = model.mlp_weights(l)
    cols = _spread(mlp.W_out.shape[-1]).to(mlp.W_out.device)
    own = acts[hn.mlp_post(l)] @ mlp.W_out[:, cols].float() + (mlp.b_out[cols].float() if mlp.b_out is not None else 0)
    return _rel(own, acts[model.own_output_name(l, "mlp")][..., cols.to(own.device)])


def _experts(model, acts, l: int) -> float:
    x = acts[hn.mlp_in(l)].reshape(-1, model.info.d_model)
    per_expert, shared, _, _ = model.expert_writes(l, x)
    measured = acts[model.own_output_name(l, "mlp")].reshape(-1, model.info.d_model)
    return _rel(per_expert.sum(1) + shared, measured)
