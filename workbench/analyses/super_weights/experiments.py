"""The paper's experiments around given super weights, each a cached analysis returning a result.

- ``super_weight_prune``: intact vs pruned vs pruned with the super activation restored;
- ``super_weight_scale``: scale the super weights by s (quality curve);
- ``super_weight_outliers``: prune the other top-|w| outliers of W_out but keep the super weights;
- ``super_weight_quantize``: block-wise RTN (bits x block size), plain vs clip + restore.

Every result has a ``quality`` table (one row per setting: loss and perplexity on the
evaluation text, change vs intact) and, where it applies, ``next_tokens`` (top tokens
after each prompt per setting). Weights are given as (layer, row, col) in HF
``down_proj.weight[row, col]`` terms (TransformerLens ``W_out[layer, col, row]``). Every
edit happens inside ``model.restoring``: the model is restored bit for bit, even on error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pandas as pd
import torch

from ..._progress import progress
from ...errors import InputError
from ...models import hook_names as hn
from ...results import Result
from ...engine.registry import Analysis, ResultT
from ...engine.runner import run_analysis
from . import detect
from ...corpus import evaluate
from .evaluate import check_prompts, eval_windows, next_token_table, scaled, with_eval_digest
from .quantize import blockwise_rtn
from ...models.contract import HookedSource

Coord = tuple[int, int, int]
QUANT_MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out")


@dataclass(frozen=True)
class ExperimentConfig:
    weights: tuple[Coord, ...] | None = None  # (layer, row, col) super weights; None: the detected ones (prepare)
    prompts: tuple[str, ...] = ("Summer is hot. Winter is", "The capital of France is")  # next tokens shown per setting
    top_k: int = 5  # next tokens kept per prompt and setting
    eval_file: str | None = None  # evaluation text (None: the shipped data/eval_corpus.txt)
    eval_digest: str = ""  # content hash of that text (filled in before the cache key, so the cache follows edits)
    eval_windows: int = 8  # windows of the evaluation text
    window: int = 128  # tokens per window (BOS included)
    batch_size: int = 8  # windows per forward pass


@dataclass(frozen=True)
class PruneConfig(ExperimentConfig):
    restore_fraction: float = 0.5  # restore the channel where |intact value| >= this x its largest |value|


@dataclass(frozen=True)
class ScaleConfig(ExperimentConfig):
    scales: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0)  # multipliers of the super weights


@dataclass(frozen=True)
class OutlierConfig(ExperimentConfig):
    top_fraction: float = 1e-5  # the largest |w| over all W_out matrices pruned (super weights excluded)


@dataclass(frozen=True)
class QuantizeConfig(ExperimentConfig):
    bits: tuple[int, ...] = (4,)  # bit widths to try
    block_sizes: tuple[int, ...] = (128, 256, 512, 1024)  # square tiles of block x block weights
    matrices: tuple[str, ...] = QUANT_MATRICES  # which weight matrices of every layer are quantized
    clip_z: float = 9.0  # "clip + restore": tile range narrowed to mean +- clip_z std, super weights restored


@dataclass(frozen=True)
class ExperimentResult(Result):
    """Tables: ``quality`` (one row per setting: loss, perplexity, delta_loss vs intact, kl = mean
    KL(intact || setting) of the next-token predictions, nats per token) and
    ``next_tokens`` (setting, prompt, rank, token, probability)."""

    @property
    def quality(self) -> pd.DataFrame:
        """One row per setting: loss, perplexity, delta_loss, kl (a copy)."""
        return self.to_frame("quality")

    @property
    def next_tokens(self) -> pd.DataFrame:
        """Setting, prompt, rank, token, probability of the top next tokens (a copy)."""
        return self.to_frame("next_tokens")

    def summary(self) -> list[tuple[str, str]]:
        q = self.quality
        worst = q.loc[q["loss"].idxmax()]
        return [
            ("model", self.model_id),
            ("super weights", ", ".join(f"layer {l} [{r}, {c}]" for l, r, c in self.config.weights)),
            ("intact loss", f"{self.meta['intact_loss']:.4f} (perplexity {math.exp(self.meta['intact_loss']):.2f}, "
                            f"{self.meta['eval_tokens']} tokens)"),
            ("worst setting", f"{worst['setting']}: loss {worst['loss']:.4f} (perplexity {worst['perplexity']:.4g})"),
        ]


@dataclass(frozen=True)
class PruneResult(ExperimentResult):
    analysis = "super_weight_prune"
    title = "Super weights: prune, and restore the super activation"
    config_cls = PruneConfig


@dataclass(frozen=True)
class ScaleResult(ExperimentResult):
    analysis = "super_weight_scale"
    title = "Super weights: scaling"
    config_cls = ScaleConfig


@dataclass(frozen=True)
class OutlierResult(ExperimentResult):
    analysis = "super_weight_outliers"
    title = "Super weights vs other outliers"
    config_cls = OutlierConfig


@dataclass(frozen=True)
class QuantizeResult(ExperimentResult):
    analysis = "super_weight_quantize"
    title = "Super weights and block-wise quantization"
    config_cls = QuantizeConfig


# ------------------------------------------------------------------ helpers
def _check(model, config: ExperimentConfig) -> tuple[Coord, ...]:
    if not config.weights:
        raise InputError("no super weights given: pass weights=((layer, row, col), ...), or run wb.super_weights(model) "
                         "first (the wb.* experiment functions use its super weights by default)")
    facts = model.facts
    for layer, row, col in config.weights:
        if not (0 <= layer < facts.n_layers and 0 <= row < facts.d_model and 0 <= col < facts.d_mlp):
            raise InputError(f"weight ({layer}, {row}, {col}) is outside {model.name}: layer < {facts.n_layers}, "
                             f"row (output channel) < {facts.d_model}, col (input channel) < {facts.d_mlp}")
    model.require_finite_weights()
    return tuple((int(l), int(r), int(c)) for l, r, c in config.weights)


class _Evaluator:
    """Loss on the evaluation windows and next tokens on the prompts, one setting at a time."""

    def __init__(self, model, config: ExperimentConfig):
        self.model, self.config = model, config
        self.prompts = check_prompts(config.prompts) if config.prompts else ()
        self.windows = eval_windows(model, config.eval_file, config.eval_windows, config.window)
        self.rows: list[dict[str, Any]] = []
        self.tokens: list[pd.DataFrame] = []
        self.intact: float | None = None
        self.reference: list[torch.Tensor] | None = None  # the intact run's log-probs, for KL

    def measure(self, setting: str, before=None, **extra) -> float:
        """Evaluate the model as it is now; the first call is the intact reference."""
        first = self.intact is None
        loss, kl, kept = evaluate(self.model, self.windows, batch_size=self.config.batch_size, before=before,
                                  keep=first, reference=self.reference)
        if first:
            self.intact, self.reference, kl = loss, kept, 0.0
        intact = loss if self.intact is None else self.intact  # (set by the first call)
        self.rows.append({"setting": setting, **extra, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                          "delta_loss": loss - intact, "kl": kl})
        if self.prompts:
            if before is not None:
                before(-1)  # -1: the prompt batch
            self.tokens.append(next_token_table(self.model, self.prompts, setting, self.config.top_k))
        return loss

    def same_as_intact(self, setting: str, **extra) -> None:
        """A setting that leaves the weights as they are (e.g. scale 1): the intact numbers, no forward pass."""
        row = self.rows[0]
        self.rows.append({"setting": setting, **extra, **{k: row[k] for k in ("loss", "perplexity", "delta_loss", "kl")}})
        if self.tokens:
            self.tokens.append(self.tokens[0].assign(setting=setting))

    def result(self, cls: type[ResultT], fingerprint: str, **meta: Any) -> ResultT:
        self.reference = None
        tokens = pd.concat(self.tokens, ignore_index=True) if self.tokens else next_token_table(self.model, (), "")
        return cls(
            config=self.config, model_id=self.model.name, fingerprint=fingerprint,
            tables={"quality": pd.DataFrame(self.rows), "next_tokens": tokens},
            meta={"intact_loss": self.intact, "eval_tokens": int(self.windows.shape[0] * (self.windows.shape[1] - 1)), **meta},
        )


# ------------------------------------------------------------------ experiments
def compute_prune(model: HookedSource, config: PruneConfig) -> PruneResult:
    coords = _check(model, config)
    fingerprint = model.fingerprint()
    ev = _Evaluator(model, config)
    channels = sorted({(l, r) for l, r, _ in coords})  # (layer, output channel) of each super activation
    recorded: dict[tuple[int, int, int], torch.Tensor] = {}  # (chunk start, layer, row) -> intact Y[:, :, row]
    state = {"start": 0}

    def before(start: int) -> None:
        state["start"] = start

    def recorder(layer, row):
        def hook(y, hook=None):
            recorded[(state["start"], layer, row)] = y[..., row].detach().clone()

        return hook

    with model.hooks([(hn.mlp_out(l), recorder(l, r)) for l, r in channels]):
        ev.measure("intact", before)
    peaks: dict[tuple[bool, int, int], float] = {}  # (prompt batch?, layer, row) -> largest intact |Y[..., row]|
    for (start, l, r), v in recorded.items():
        key = (start < 0, l, r)
        peaks[key] = max(peaks.get(key, 0.0), v.abs().max().item())

    def restorer(layer, row):
        def hook(y, hook=None):
            original = recorded[(state["start"], layer, row)]  # [batch, pos]
            # The super activation: where the intact channel is within restore_fraction of its peak.
            keep = original.abs() >= config.restore_fraction * peaks[(state["start"] < 0, layer, row)]
            y[..., row] = torch.where(keep, original.to(y.dtype), y[..., row])
            return y

        return hook

    with scaled(model, coords, 0.0):
        ev.measure("pruned", before)
        with model.hooks([(hn.mlp_out(l), restorer(l, r)) for l, r in channels]):
            ev.measure("pruned + super activation restored", before)
    return ev.result(PruneResult, fingerprint, restored_channels=[list(c) for c in channels])


def compute_scale(model: HookedSource, config: ScaleConfig) -> ScaleResult:
    coords = _check(model, config)
    if not config.scales:
        raise InputError("give at least one scale, e.g. scales=(0.0, 0.5, 1.0, 2.0)")
    fingerprint = model.fingerprint()
    ev = _Evaluator(model, config)
    ev.measure("intact", scale=1.0)
    for s in progress(config.scales, desc="scaling super weights"):
        if float(s) == 1.0:
            ev.same_as_intact(f"scale {s:g}", scale=1.0)
            continue
        with scaled(model, coords, float(s)):
            ev.measure(f"scale {s:g}", scale=float(s))
    return ev.result(ScaleResult, fingerprint)


def top_outliers(model, n: int, exclude: tuple[Coord, ...]) -> list[Coord]:
    """The ``n`` largest-|w| entries over all W_out matrices, as (layer, row, col), ``exclude`` skipped."""
    W = model.W_out.abs_()  # [layer, d_mlp, d_model]: a stacked copy, so |.| in place
    for layer, row, col in exclude:
        W[layer, col, row] = -1.0  # never picked
    flat = W.flatten().topk(n).indices
    layer, rest = flat // (W.shape[1] * W.shape[2]), flat % (W.shape[1] * W.shape[2])
    col, row = rest // W.shape[2], rest % W.shape[2]
    return list(zip(layer.tolist(), row.tolist(), col.tolist()))


def compute_outliers(model: HookedSource, config: OutlierConfig) -> OutlierResult:
    coords = _check(model, config)
    if not 0 < config.top_fraction < 1:
        raise InputError(f"top_fraction must lie in (0, 1), got {config.top_fraction}")
    fingerprint = model.fingerprint()
    facts = model.facts
    n = max(1, round(config.top_fraction * facts.n_layers * facts.d_mlp * facts.d_model))
    others = top_outliers(model, n, coords)
    ev = _Evaluator(model, config)
    ev.measure("intact", pruned=0)
    with scaled(model, coords, 0.0):
        ev.measure("super weights pruned", pruned=len(coords))
    with scaled(model, others, 0.0):
        ev.measure(f"top {n} other outliers pruned, super weights kept", pruned=n)
        with scaled(model, coords, 0.0):
            ev.measure("both pruned", pruned=n + len(coords))
    return ev.result(OutlierResult, fingerprint, n_outliers=n, smallest_pruned=float(
        min(abs(float(model.mlp_weights(l).W_out[c, r])) for l, r, c in others)))


def _quant_views(model, layer: int, name: str):
    """(view, to_2d, from_2d) for one matrix of ``layer``: quantization tiles a 2-D [in, out] matrix."""
    if name in ("W_in", "W_gate", "W_out"):
        view = getattr(model.mlp_weights(layer), name)
        return view, (lambda t: t), (lambda t: t)
    view = getattr(model.attention_weights(layer), name)  # [head, d_model, d_head] or W_O [head, d_head, d_model]
    if name == "W_O":
        return view, (lambda t: t.flatten(-3, -2)), (lambda t: t.reshape(view.shape))  # [head * d_head, d_model]
    heads, d_model, d_head = view.shape
    return (view, (lambda t: t.transpose(-3, -2).flatten(-2)),  # [d_model, head * d_head]
            (lambda t: t.reshape(d_model, heads, d_head).transpose(0, 1)))


def compute_quantize(model: HookedSource, config: QuantizeConfig) -> QuantizeResult:
    coords = _check(model, config)
    unknown = sorted(set(config.matrices) - set(QUANT_MATRICES))
    if unknown or not config.matrices:
        raise InputError(f"unknown matrices {unknown}; choose from {QUANT_MATRICES}")
    fingerprint = model.fingerprint()
    matrices = [m for m in config.matrices if m != "W_gate" or model.facts.mlp == "gated"]
    ev = _Evaluator(model, config)
    ev.measure("intact", bits=32, block=0, method="none")
    views = {(l, m): _quant_views(model, l, m) for l in range(model.facts.n_layers) for m in matrices}
    originals = {(l, r, c): float(model.mlp_weights(l).W_out[c, r]) for l, r, c in coords}
    settings = [(b, s, m) for b in config.bits for s in config.block_sizes for m in ("rtn", "clip + restore")]
    for bits, block, method in progress(settings, desc="quantizing"):
        with model.restoring(*(v for v, _, _ in views.values())), torch.no_grad():
            for name in matrices:
                # Same-shape matrices of all layers quantized in one batched call.
                stacked = torch.stack([views[(l, name)][1](views[(l, name)][0]) for l in range(model.facts.n_layers)])  # [L, in, out]
                quant = blockwise_rtn(stacked, bits, block, clip_z=config.clip_z if method != "rtn" else None)
                for l in range(model.facts.n_layers):
                    view, _, from2 = views[(l, name)]
                    view.copy_(from2(quant[l]))
            if method != "rtn":
                for (l, r, c), value in originals.items():
                    model.mlp_weights(l).W_out[c, r] = value  # super weights back in full precision
            label = "round-to-nearest" if method == "rtn" else f"clip (z {config.clip_z:g}) + restore super weights"
            ev.measure(f"{bits}-bit, {block}x{block} blocks, {label}", bits=bits, block=block, method=method)
    return ev.result(QuantizeResult, fingerprint, matrices=matrices)


ExperimentT = TypeVar("ExperimentT", bound="ExperimentConfig")


def prepare_experiment(model, config: ExperimentT) -> ExperimentT:
    """``Analysis.prepare`` of the experiments: the super weights :func:`~.api.super_weights` finds when no
    ``weights`` are given, weights as (layer, row, col) ints, prompts checked, the evaluation text's digest."""
    weights = config.weights
    if weights is None:
        weights = run_analysis(detect.ANALYSIS, model).coordinates()
        if not weights:
            raise InputError(f"wb.super_weights found no super weights in {model.name}; pass weights=((layer, row, col), ...)")
    prompts = check_prompts(config.prompts) if config.prompts else ()
    if any(len(w) != 3 for w in weights):
        raise InputError("weights are (layer, row, col) triples, e.g. weights=((2, 1827, 7890),)")
    weights = tuple((int(w[0]), int(w[1]), int(w[2])) for w in weights)
    return with_eval_digest(model, replace(config, weights=weights, prompts=prompts))


def _spec(name: str, description: str, config_cls: type[ExperimentT], result_cls: type[ResultT],
          compute: Callable[..., ResultT]) -> Analysis[ExperimentT, ResultT]:
    return Analysis(name=name, description=description, config_cls=config_cls, result_cls=result_cls,
                    compute=compute, in_report=False, prepare=prepare_experiment,
                    needs=("residual", "mlp_write"))


PRUNE = _spec("super_weight_prune", "Prune the super weights; prune but restore the super activation",
              PruneConfig, PruneResult, compute_prune)
SCALE = _spec("super_weight_scale", "Scale the super weights by s: quality curve",
              ScaleConfig, ScaleResult, compute_scale)
OUTLIERS = _spec("super_weight_outliers", "Prune other large W_out outliers but keep the super weights",
                 OutlierConfig, OutlierResult, compute_outliers)
QUANTIZE = _spec("super_weight_quantize", "Block-wise RTN quantization: plain vs clip + restore super weights",
                 QuantizeConfig, QuantizeResult, compute_quantize)
ANALYSES = (PRUNE, SCALE, OUTLIERS, QUANTIZE)
