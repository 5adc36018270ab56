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

import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from . import hook_names as hn
from . import identities as measure
from .facts import layer_span

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
    "uniform_heads": "the attention layers' heads share one shape (what composition between their heads needs)",
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
                outcome = (f"could not be checked on {model_name} ({found.problem})" if found.error is None else
                           f"failed on {model_name} ({found.describe().removeprefix('FAILED: ')})")
                heads = self.identities.get("uniform_heads")
                instead = ("wb.head_composition (it runs over the attention layers) or wb.reagent (needs only the "
                           "logits)" if name == "uniform_attention" and heads is not None and heads.passed else
                           "wb.reagent (needs only the logits)")
                raise UnsupportedModelError(
                    f"{what} relies on '{IDENTITIES[name]}', which {outcome}; the workbench does not compute on an "
                    f"unverified decomposition. Use {instead} instead, or report the model so its facts can be added")

    def describe(self) -> list[tuple[str, str]]:
        how = "read back (checked at an earlier load)" if self.cached else f"on one short prompt, {self.seconds:.2f} s"
        return [("self-check", how)] + [(f"check: {name}", found.describe()) for name, found in self.identities.items()]


@functools.cache
def _checking_code() -> str:
    """The versions and a digest of the sources the identities run: read once per process, not per load."""
    import transformers

    from .._version import __version__

    here = os.path.dirname(__file__)
    code = hashlib.sha256()
    for module in ("selfcheck.py", "identities.py", "writes.py", "weights.py", "base.py", "architecture.py", "facts.py"):
        with open(os.path.join(here, module), "rb") as f:
            code.update(f.read())
    return f"{__version__}|{torch.__version__}|{transformers.__version__}|{code.hexdigest()[:16]}"


def self_check(model) -> SelfCheck:
    """The self-check of ``model``: read back when this exact model (the fingerprint of its weights and config)
    was checked before with the same facts and the same checking code (workbench, torch and transformers
    versions, and the sources of the modules the identities run), else run and stored."""
    from .._paths import cache_root

    # the facts the identities are checked against (what was loaded, and from where, is not one of them)
    facts = hashlib.sha256(repr(replace(model.facts, name="", source="", checks=None)).encode()).hexdigest()[:16]
    versions = f"{_checking_code()}|{facts}"
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
    heads = {n for f in model.facts.layers for n in (f.n_heads, f.n_kv_heads)}
    while ids.shape[1] in heads:  # keep [pos, head] and [head, pos] layouts apart (see _per_head)
        ids = torch.cat([ids, ids[:, -1:]], 1)
    layers = range(model.facts.n_layers)
    attention = [l for l in layers if model.facts.layers[l].attention]
    names: set[str] = set()
    for l in layers:  # a hook the bridge lacks leaves the identities that need it unchecked, hence failed
        wanted = (hn.resid_pre(l), hn.resid_mid(l), hn.resid_post(l), hn.attn_out(l), hn.mlp_out(l), hn.mlp_in(l),
                  hn.mlp_post(l), hn.attn_q(l), hn.attn_k(l), hn.attn_v(l), hn.attn_z(l), hn.attn_pattern(l),
                  hn.attn_q(l, rotated=True), hn.attn_k(l, rotated=True), measure.normed(l, "q"), measure.normed(l, "k"),
                  measure.own(model, l, "attn"), measure.own(model, l, "mlp"))
        names |= {n for n in wanted if n is not None and n in model._hook_names}
    store: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(t, hook):
            store[name] = t.detach()
        return hook

    with model.hooks([(n, keep(n)) for n in sorted(names)]), torch.no_grad():
        hooked = model(ids).float()
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.facts.d_vocab  # another last token: earlier logits must not move
    with torch.no_grad():
        own, other = model.logits(input_ids=torch.cat([ids, changed])).float()
    acts = {k: v.float() for k, v in store.items()}

    # every identity is present unless the model has no layer of its kind (dense vs experts): absent = not needed
    found: dict[str, Identity] = {
        "causal": Identity("causal", measure.rel(other[:-1], own[:-1]), (), None, tol),
        "logits": Identity("logits", measure.rel(hooked[0], own), (), None, tol),
    }
    reads = measure.Reads(model)
    checks: dict[str, Callable[[int], float]] = {
        "residual": lambda l: measure.residual(model, acts, l),
        "head_writes": lambda l: measure.head_writes(model, acts, l),
        "qkv": lambda l: measure.qkv(model, reads, acts, l),
        "attn_write": lambda l: measure.attn_write(model, reads, acts, l),
        "values_mixed": lambda l: measure.values_mixed(reads, acts, l),
        "pattern": lambda l: measure.pattern(reads, acts, l),
    }
    found.update(_over_layers(checks, attention, tol))
    found["uniform_attention"] = _uniform(model.facts, tol)
    found["uniform_heads"] = _uniform(model.facts, tol, attention_only=True)
    dense = [l for l in layers if model.facts.layers[l].mlp in ("plain", "gated")]
    moe = [l for l in layers if model.facts.layers[l].mlp == "moe"]
    mlps = [l for l in layers if model.facts.layers[l].mlp != "none"]
    if mlps:
        found.update(_over_layers({"mlp_read": lambda l: measure.mlp_read(model, acts, l)}, mlps, tol))
    if dense:
        found.update(_over_layers({"mlp_in": lambda l: measure.mlp_in(model, acts, l),
                                   "mlp_write": lambda l: measure.mlp_write(model, acts, l)}, dense, tol))
    if moe:
        found.update(_over_layers({"experts": lambda l: measure.experts(model, acts, l)}, moe, tol))
    return SelfCheck(found, time.perf_counter() - start)


def _uniform(facts, tol: float, *, attention_only: bool = False) -> Identity:
    """A structural fact, not a measured one: which layers lack softmax heads (``uniform_attention``), or differ in
    head shape; ``attention_only``: the same over the attention layers alone (``uniform_heads``: a hybrid's)."""
    name = "uniform_heads" if attention_only else "uniform_attention"
    layers = [l for l, f in enumerate(facts.layers) if f.attention]
    others = [l for l, f in enumerate(facts.layers) if not f.attention]
    if others and not attention_only:
        kinds = sorted({facts.layers[l].kind for l in others})
        return Identity(name, None, (), None, tol,
                        f"layers {layer_span(tuple(others))} are {' / '.join(kinds)}, with no attention heads")
    if not layers:
        return Identity(name, None, (), None, tol, "no layer has softmax attention heads")
    shapes = {(facts.layers[l].n_heads, facts.layers[l].n_kv_heads, facts.layers[l].d_head) for l in layers}
    if len(shapes) > 1:
        sizes = ", ".join(f"{h}/{k} heads of {d}" for h, k, d in sorted(shapes))
        return Identity(name, None, (), None, tol, f"head counts or sizes differ between layers: {sizes}")
    return Identity(name, 0.0, tuple(layers), None, tol)


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
