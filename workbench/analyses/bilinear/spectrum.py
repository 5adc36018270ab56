"""The ``bilinear_spectrum`` analysis: eigendecomposition of the interaction matrices of a bilinear layer.

Works on any bilinear model built here (classifier, bare layer, bilinear LM, or a trained result),
for output directions chosen as the layer's outputs (classes), principal output directions, token
logits, or arbitrary vectors. Models with non-bilinear MLPs (every pretrained LM, SwiGLU / GELU)
are refused with an error that points to :func:`workbench.bilinear_replacement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError, UnsupportedModelError
from ...results import Result
from ...types import (Contributions, Eigenvalues, LayerInputs, LayerOutputs, OutputDirections, TopValues,
                      TopVectors)
from ...linalg import effective_rank
from ...engine.registry import Analysis
from ...engine.runner import run_analysis
from . import interaction as ix
from .layers import BilinearClassifier, BilinearLM, BilinearMLP, BilinearWeights


@dataclass(frozen=True)
class SpectrumConfig:
    layer: int = 0  # bilinear LMs: which block's MLP
    # "outputs" | "svd" | "tokens" | "vectors" | "auto" (outputs for classifiers / narrow layers, tokens or vectors when
    # given, else svd); replacements also have "pca". Vectors given here (a tensor or nested sequence [k, d_out]) are
    # moved to ``vectors`` by :func:`with_direction_vectors` before the cache key is made.
    directions: Any = "auto"
    tokens: tuple[str, ...] = ()  # token logits (through the unembedding) as directions, for LMs
    vectors: tuple[tuple[float, ...], ...] = ()  # arbitrary output-space directions (e.g. from another analysis)
    n_directions: int = 8  # how many principal output directions for "svd"
    n_top: int = 6  # top positive and top negative eigenvectors kept per direction
    n_inputs: int = 64  # inputs whose per-eigenvector contributions are stored
    method: str = "auto"  # "dense" | "factored" | "auto" (factored when 2 d_hidden < d_in)
    float64: bool = True  # eigendecompose in float64


@dataclass
class LayerView:
    """Everything the spectrum needs from a model, whatever its kind."""

    kind: str
    weights: BilinearWeights
    output_labels: list[str]
    eval_inputs: Tensor  # [n, d_in] inputs of the layer (homogeneous if biased) for truncation / contributions
    eval_labels: list[str]  # one text per eval input
    classes: Tensor | None = None  # [n] true classes: truncation is scored as accuracy
    image_shape: tuple[int, int] | None = None
    unembed: Tensor | None = None  # [d_out, vocab]: token-logit directions
    embed: Tensor | None = None  # [vocab, d_in]: reading eigenvectors as tokens
    vocab: list[str] | None = None
    principal: Tensor | None = None  # [k, d_out] principal directions of the layer's real outputs ("pca")
    principal_names: list[str] | None = None
    extra_meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BilinearSpectrumResult(Result):
    """Eigen-spectra of the interaction matrices Q_u of one bilinear layer, one per output direction u.

    Tensors: ``directions`` [k, d_out]; ``eigenvalues`` [k, r] descending; ``top_values`` /
    ``top_vectors`` [k, 2 n_top (, d_in)] (n_top most positive, then n_top most negative);
    ``inputs`` [n, d_in]; ``contributions`` [n, k, 2 n_top + 1] = lambda_i (v_i^T x)^2 of the kept
    eigenvectors then the rest; ``outputs`` [n, k] = x^T Q_u x.
    Tables: ``directions``, ``eigenvectors``, ``truncation``, ``inputs``.
    """

    analysis = "bilinear_spectrum"
    title = "Bilinear layer: interaction-matrix eigenvectors"
    config_cls: ClassVar[type | None] = SpectrumConfig

    # --------------------------------------------------------------- contents
    @property
    def directions(self) -> OutputDirections:
        """The output directions u whose interaction matrices Q_u were decomposed."""
        return self.tensors["directions"]

    @property
    def eigenvalues(self) -> Eigenvalues:
        """Every eigenvalue of each Q_u, descending."""
        return self.tensors["eigenvalues"]

    @property
    def top_values(self) -> TopValues:
        """The n_top most positive eigenvalues, then the n_top most negative."""
        return self.tensors["top_values"]

    @property
    def top_vectors(self) -> TopVectors:
        """Their eigenvectors."""
        return self.tensors["top_vectors"]

    @property
    def inputs(self) -> LayerInputs:
        """The stored held-out inputs of the layer."""
        return self.tensors["inputs"]

    @property
    def contributions(self) -> Contributions:
        """lambda_i (v_i^T x)^2 of the kept eigenvectors for each stored input, then the rest."""
        return self.tensors["contributions"]

    @property
    def outputs(self) -> LayerOutputs:
        """x^T Q_u x for each stored input and direction."""
        return self.tensors["outputs"]

    @property
    def direction_table(self) -> pd.DataFrame:
        """One row per direction: effective rank, extreme eigenvalues, output spread."""
        return self.tables["directions"]

    @property
    def eigenvector_table(self) -> pd.DataFrame:
        """One row per direction x kept eigenvector: rank (+ positive, - negative), eigenvalue, what it reads."""
        return self.tables["eigenvectors"]

    @property
    def truncation(self) -> pd.DataFrame:
        """The truncation curve: the metric with the k largest-|lambda| eigenvectors kept."""
        return self.tables["truncation"]

    @property
    def input_table(self) -> pd.DataFrame:
        """One row per stored input: its index and label (classifiers: class and prediction)."""
        return self.tables["inputs"]

    @property
    def n_top(self) -> int:
        """Top positive (and negative) eigenvectors kept per direction."""
        return int(self.meta["n_top"])

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of image inputs; None for other models."""
        shape = self.meta.get("image_shape")
        return None if not shape else (int(shape[0]), int(shape[1]))

    @property
    def truncation_metric(self) -> str:
        return str(self.meta["truncation_metric"])

    @property
    def direction_names(self) -> list[str]:
        return list(self.direction_table["direction"])

    def index(self, direction: str | int) -> int:
        names = self.direction_names
        if isinstance(direction, int):
            return direction
        if direction not in names:
            raise InputError(f"no direction {direction!r}; this result has {names}")
        return names.index(direction)

    def approximation_note(self) -> str:
        """'' for exact bilinear layers; for replacements, the fidelity that qualifies every number."""
        return ""

    def summary(self) -> list[tuple[str, str]]:
        m = self.meta
        table = self.direction_table
        trunc = self.truncation
        lines = [
            ("model", self.model_id),
            ("layer", f"{m['kind']}: d_in {m['d_in']}, d_hidden {m['d_hidden']}, {m['method']} eigendecomposition "
                      f"({m['rank']} eigenpairs per direction)"),
            ("directions", f"{len(table)} ({m['direction_kind']})"),
            ("effective rank", f"median {table['effective_rank'].median():.1f} (min {table['effective_rank'].min():.1f}, "
                               f"max {table['effective_rank'].max():.1f})"),
        ]
        full = trunc[(trunc.direction == "all")]
        if len(full):
            metric = self.truncation_metric
            at = {int(k): v for k, v in zip(full["k"], full["value"])}
            shown = ", ".join(f"k={k}: {at[k]:.3f}" for k in (1, 2, 5, 10, m["rank"]) if k in at)
            lines.append((f"truncation ({metric})", shown))
        if m.get("task_metrics"):
            lines.append(("model metrics", ", ".join(f"{k} {v:.4g}" for k, v in m["task_metrics"].items())))
        return lines


# ---------------------------------------------------------------- views
def _not_bilinear(model) -> UnsupportedModelError:
    gated = getattr(getattr(model, "facts", None), "mlp", None) == "gated"
    what = "gated (SwiGLU-style: silu(gate x) * (up x))" if gated else "plain (activation(W_in x))"
    return UnsupportedModelError(
        f"{model.name}'s MLPs are {what}, not bilinear: their output is not a quadratic form of the input, so there "
        "are no interaction matrices to eigendecompose. Fit a bilinear replacement of one layer and analyse that "
        "instead: wb.bilinear_replacement(model, layer=...) (it reports how faithful the replacement is), or train a "
        "bilinear model: wb.train_digits(), wb.train_bilinear_lm()"
    )


def check_bilinear(model) -> None:
    """Raise :class:`UnsupportedModelError` unless ``model`` is one of the bilinear models built here."""
    from ...models.hooked import HookedModel

    if isinstance(model, HookedModel):
        raise _not_bilinear(model)
    if not isinstance(model, (BilinearClassifier, BilinearMLP, BilinearLM)):
        raise UnsupportedModelError(
            f"bilinear_spectrum needs a bilinear model (BilinearClassifier, BilinearMLP, BilinearLM or a trained "
            f"result), got {type(model).__name__}; for a pretrained LM use wb.bilinear_replacement(model, layer=...)"
        )


def layer_view(model, config: SpectrumConfig) -> LayerView:
    """Resolve ``model`` (classifier, layer, LM) to the bilinear layer to analyse."""
    check_bilinear(model)
    if isinstance(model, BilinearClassifier):
        return _classifier_view(model)
    if isinstance(model, BilinearMLP):
        return _mlp_view(model)
    return _lm_view(model, config.layer)


def _homogeneous(x: Tensor, biased: bool) -> Tensor:
    return torch.cat([x, torch.ones_like(x[:, :1])], 1) if biased else x


def _classifier_view(model: BilinearClassifier) -> LayerView:
    from .training import digits_split

    w = model.weights()
    dataset = model.arch.get("dataset") or ""
    if dataset.startswith("digits:"):
        _, seed, frac = dataset.split(":")
        _, _, X, y = digits_split(int(seed), float(frac))
        labels = [f"test image {i} (digit {int(c)})" for i, c in enumerate(y)]
    else:  # no data known: Gaussian pixels only give a variance-based truncation curve
        X, y = torch.randn(512, w.d_in - w.biased, generator=torch.Generator().manual_seed(0)), None
        labels = [f"gaussian input {i}" for i in range(len(X))]
    X = X.to(w.W.device, w.W.dtype)
    return LayerView("classifier", w, model.output_labels(), _homogeneous(X, w.biased), labels, classes=y,
                     image_shape=(int(model.image_shape[0]), int(model.image_shape[1])), extra_meta={"input_labels": model.input_labels(), "dataset": dataset})


def _mlp_view(model: BilinearMLP) -> LayerView:
    w = model.weights()
    X = torch.randn(512, model.arch["d_in"], generator=torch.Generator().manual_seed(0)).to(w.W.device, w.W.dtype)
    return LayerView("bilinear layer", w, [f"out {i}" for i in range(w.P.shape[0])], _homogeneous(X, w.biased),
                     [f"gaussian input {i}" for i in range(len(X))])


@torch.no_grad()
def _lm_view(model: BilinearLM, layer: int) -> LayerView:
    from .training import lm_text_split
    from ...corpus import eval_text

    n = model.arch["n_layers"]
    if not -n <= layer < n:
        raise InputError(f"layer {layer} out of range: {model.name} has {n} layers")
    layer %= n
    block = model.block(layer)
    _, _, val = lm_text_split(eval_text(), 0.1)
    n_ctx = model.arch["n_ctx"]
    ids = model.encode(val)[: 8 * n_ctx]
    windows = ids[: len(ids) // n_ctx * n_ctx].reshape(-1, n_ctx).to(model.embed.weight.device)  # [w, n_ctx]
    if len(windows) == 0:
        raise InputError("the evaluation text is too short for one context window")
    captured: list[Tensor] = []
    model(windows, mlp_inputs=captured)
    X = captured[layer].flatten(0, 1)  # [w * n_ctx, d_model]
    chars = [model.vocab[i] for i in windows.flatten().tolist()]
    labels = [repr("".join(chars[max(0, i - 15): i + 1])) for i in range(len(chars))]
    unembed = (model.unembed.weight * model.norm.weight).mT  # [d_model, vocab]: the logit of token t is u_t . resid / rms
    embed = model.embed.weight * block.norm2.weight  # [vocab, d_model]: tokens as the layer would see them, before scaling
    return LayerView("bilinear LM", block.mlp.weights(), [f"d{i}" for i in range(model.arch["d_model"])], X, labels,
                     unembed=unembed.detach(), embed=embed.detach(), vocab=list(model.vocab), extra_meta={"layer": layer})


# ------------------------------------------------------------ directions
def with_direction_vectors(model, config):
    """``Analysis.prepare`` of the spectrum and the replacement: ``directions`` given as vectors become
    ``directions="vectors"`` with ``vectors`` as tuples of floats (what the cache key and the result record)."""
    if isinstance(config.directions, str):
        return config
    t = torch.as_tensor(config.directions, dtype=torch.float64).detach().cpu()
    rows = t[None] if t.ndim == 1 else t
    return replace(config, directions="vectors", vectors=tuple(tuple(float(v) for v in row) for row in rows.tolist()))


def resolve_directions(view: LayerView, config: SpectrumConfig) -> tuple[Tensor, list[str], str]:
    """Output-space direction vectors [k, d_out], their names, and which kind they are."""
    P = view.weights.P
    d_out = P.shape[0]
    kind = config.directions
    if kind == "auto":
        kind = ("vectors" if config.vectors else "tokens" if config.tokens else "pca" if view.principal is not None else
                "outputs" if view.kind == "classifier" or d_out <= 16 else "svd")
    if kind == "pca":
        if view.principal is None:
            raise InputError("directions='pca' needs the layer's recorded outputs (bilinear_replacement); use 'svd' here")
        names = view.principal_names or [f"pc{i}" for i in range(len(view.principal))]
        return view.principal[: config.n_directions].to(P.dtype), names[: config.n_directions], kind
    if kind == "outputs":
        return torch.eye(d_out, dtype=P.dtype, device=P.device), list(view.output_labels), kind
    if kind == "svd":
        U, S, _ = torch.linalg.svd(P.double(), full_matrices=False)  # principal output directions of the projection
        k = min(config.n_directions, U.shape[1])
        U = U[:, :k] * U[:, :k].sum(0).sign().where(U[:, :k].sum(0) != 0, torch.ones(k, dtype=U.dtype, device=U.device))
        return U.mT.to(P.dtype), [f"output SV{i + 1} (σ={S[i]:.3g})" for i in range(k)], kind
    if kind == "tokens":
        if view.unembed is None or view.vocab is None:
            raise InputError("token directions need a language model; use directions='outputs', 'svd' or vectors=")
        if not config.tokens:
            raise InputError("directions='tokens' needs tokens=('a', 'b', ...)")
        index = {t: i for i, t in enumerate(view.vocab)}
        missing = [t for t in config.tokens if t not in index]
        if missing:
            raise InputError(f"tokens {missing} are not in the vocabulary")
        cols = view.unembed[:, [index[t] for t in config.tokens]]  # [d_out, k]
        return (cols / cols.norm(dim=0)).mT.to(P.dtype), [f"logit {t!r}" for t in config.tokens], kind
    if kind == "vectors":
        vec = torch.tensor(config.vectors, dtype=P.dtype, device=P.device)
        if vec.ndim != 2 or vec.shape[1] != d_out:
            raise InputError(f"vectors must each have {d_out} entries (the layer's output size), got shape {tuple(vec.shape)}")
        return vec, [f"vector {i}" for i in range(len(vec))], kind
    raise InputError(f"directions must be 'auto', 'outputs', 'svd', 'pca', 'tokens' or 'vectors', got {config.directions!r}")


# -------------------------------------------------------------- analysis
def _readouts(view: LayerView, vectors: Float[Tensor, "k m d"]) -> list[list[str]]:
    """A short text per eigenvector: the tokens it reads, its peak pixel, or its largest coordinates."""
    d_plain = vectors.shape[-1] - int(view.weights.biased)
    v = vectors[..., :d_plain].float()
    if view.embed is not None and view.vocab is not None:
        e = torch.nn.functional.normalize(view.embed.float(), dim=-1)  # [vocab, d]
        sims = torch.nn.functional.normalize(v, dim=-1) @ e.mT  # [k, m, vocab]
        top, bottom = sims.topk(4, -1).indices, (-sims).topk(4, -1).indices
        fmt = lambda ids: " ".join(repr(view.vocab[i]) for i in ids.tolist())  # noqa: E731
        return [[f"+ {fmt(top[a, b])} / − {fmt(bottom[a, b])}" for b in range(v.shape[1])] for a in range(v.shape[0])]
    labels = view.extra_meta.get("input_labels") or [f"x{i}" for i in range(d_plain)]
    idx = v.abs().topk(min(3, d_plain), -1).indices  # [k, m, 3]
    return [[", ".join(f"{labels[i]} {v[a, b, i]:+.2f}" for i in idx[a, b].tolist()) for b in range(v.shape[1])]
            for a in range(v.shape[0])]


@torch.no_grad()
def analyse_layer(view: LayerView, config: SpectrumConfig) -> tuple[dict, dict, dict]:
    """Tensors, tables and meta of the spectrum analysis of ``view`` (shared with the replacement analysis)."""
    w = view.weights
    dtype = torch.float64 if config.float64 else torch.float32
    dirs, names, kind = resolve_directions(view, config)  # [k, d_out]
    if len(set(names)) != len(names):
        raise InputError(f"direction names must be distinct, got {names}")
    c = ix.output_coefficients(w.P.to(dtype), dirs.to(dtype))  # [k, h]
    method = ix.choose_method(w.d_in, w.d_hidden, config.method)
    lam, vec = ix.eigendecompose(w.W, w.V, c, method=method, dtype=dtype)  # [k, r], [k, r, d]
    k, r = lam.shape
    n_top = min(config.n_top, r // 2 if r > 1 else 1)
    keep = torch.cat([torch.arange(n_top), torch.arange(r - n_top, r).flip(0)]).to(lam.device)  # most +, most −
    top_values, top_vectors = lam[:, keep], vec[:, keep]  # [k, 2n], [k, 2n, d]

    X = view.eval_inputs.to(dtype)  # [n, d]
    cum = ix.truncated_outputs(lam, vec, X, tuple(range(r + 1)))  # [n, k, r + 1]: k = 0 .. r kept eigenvectors
    full = cum[..., -1]  # [n, k] = x^T Q_u x
    err = (cum - full[..., None]).square().mean(0)  # [k, r + 1]
    var = full.var(0, correction=0).clamp_min(1e-30)[:, None]
    explained = (1 - err / var)  # [k, r + 1] variance of the direction's output kept by the top-k eigenvectors
    grid = ix.log_spaced_ks(r)
    rows = [{"k": kk, "direction": names[j], "value": float(explained[j, kk])} for kk in grid for j in range(k)]
    if view.classes is not None:
        classes = view.classes.to(cum.device)
        accuracy = (cum.argmax(1) == classes[:, None]).double().mean(0)  # [r + 1]
        rows += [{"k": kk, "direction": "all", "value": float(accuracy[kk])} for kk in grid]
        metric = "accuracy with k eigenvectors per class"
    else:
        mean_ev = explained.mean(0)
        rows += [{"k": kk, "direction": "all", "value": float(mean_ev[kk])} for kk in grid]
        metric = "output variance explained (mean over directions)"
    k90 = [(explained[j] >= 0.9).nonzero()[0].item() if (explained[j] >= 0.9).any() else r for j in range(k)]

    erank = effective_rank(lam)
    share = lam.abs() / lam.abs().sum(-1, keepdim=True).clamp_min(1e-300)
    directions = pd.DataFrame({
        "direction": names,
        "effective_rank": erank.cpu().numpy(),
        "lambda_max": lam[:, 0].cpu().numpy(),
        "lambda_min": lam[:, -1].cpu().numpy(),
        "top_share": share.max(-1).values.cpu().numpy(),
        "k_for_90pct": k90,
        "output_std": full.std(0).cpu().numpy(),
    })
    readouts = _readouts(view, top_vectors)
    values, top_share = top_values.tolist(), share[:, keep].tolist()  # one transfer, not one per entry
    eig_rows = []
    for j in range(k):
        for b in range(2 * n_top):
            rank = b + 1 if b < n_top else -(b - n_top + 1)
            eig_rows.append({"direction": names[j], "rank": rank, "eigenvalue": values[j][b],
                             "share": top_share[j][b], "reads": readouts[j][b]})

    n_s = min(config.n_inputs, len(X))
    pick = torch.linspace(0, len(X) - 1, n_s).round().long() if view.classes is None else torch.arange(n_s)
    xs = X[pick.to(X.device)]  # [n_s, d]
    kept = ix.contributions(top_values, top_vectors, xs)  # [n_s, k, 2n]
    outputs = full[pick.to(full.device)]  # [n_s, k]
    contrib = torch.cat([kept, (outputs - kept.sum(-1))[..., None]], -1)  # [n_s, k, 2n + 1], last = the rest
    inputs = pd.DataFrame({"index": pick.tolist(), "label": [view.eval_labels[i] for i in pick.tolist()]})
    if view.classes is not None:
        inputs["class"] = view.classes[pick].cpu().numpy()
        inputs["predicted"] = outputs.argmax(-1).cpu().numpy()

    tensors = {
        "directions": dirs.float().cpu(), "eigenvalues": lam.float().cpu(), "top_values": top_values.float().cpu(),
        "top_vectors": top_vectors.float().cpu(), "inputs": xs.float().cpu(), "contributions": contrib.float().cpu(),
        "outputs": outputs.float().cpu(),
    }
    tables = {"directions": directions, "eigenvectors": pd.DataFrame(eig_rows), "truncation": pd.DataFrame(rows),
              "inputs": inputs}
    meta = {"kind": view.kind, "d_in": w.d_in, "d_hidden": w.d_hidden, "rank": r, "method": method, "n_top": n_top,
            "direction_kind": kind, "biased": w.biased, "truncation_metric": metric,
            "image_shape": list(view.image_shape) if view.image_shape else None, **view.extra_meta}
    return tensors, tables, meta


def compute_spectrum(model, config: SpectrumConfig) -> BilinearSpectrumResult:
    view = layer_view(model, config)
    tensors, tables, meta = analyse_layer(view, config)
    return BilinearSpectrumResult(config=config, model_id=model.name, fingerprint=model.fingerprint(),
                                  tensors=tensors, tables=tables, meta=meta)


def digits_demo(_report_model) -> BilinearClassifier:
    """What the report shows this analysis on: the report's LM is not bilinear (it gets
    bilinear_replacement), so the digits classifier is (trained once, then cached)."""
    from .training import DIGITS, TrainingSource, digits_data_id

    return run_analysis(DIGITS, TrainingSource("digits", digits_data_id())).model()


ANALYSIS = Analysis(
    name="bilinear_spectrum",
    description="eigendecomposition of a bilinear layer's interaction matrices per output direction; truncation curve",
    config_cls=SpectrumConfig,
    result_cls=BilinearSpectrumResult,
    compute=compute_spectrum,
    report_subject=digits_demo,
    prepare=with_direction_vectors,
)
