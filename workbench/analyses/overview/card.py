"""Model overview: architecture card, parameter counts, per-layer weight statistics and spectra."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..._memory import release_freed
from ..._progress import progress
from ...results import Result
from ...types import EmbeddingNorms, LayerSpectra, Spectrum
from ...linalg import effective_rank, singular_values
from ...engine.registry import Analysis
from ...models.contract import WeightSource


@dataclass(frozen=True)
class OverviewConfig:
    sample_text: str = "The quick brown fox jumps over the lazy dog."  # shown split into tokens


@dataclass(frozen=True)
class OverviewResult(Result):
    """Tables: ``matrices`` (one row per layer x weight matrix), ``parameters``, ``tokens``.

    Tensors: ``sv/<matrix>`` singular values [layer, rank], descending (``layers/<matrix>``: which layers, when
    not all have it);
    ``embedding_norms`` [d_vocab] L2 norm of each token's embedding.
    ``meta['architecture']``: the model's :class:`~workbench.models.ModelFacts` as a dict (``to_dict(checks=False)``),
    ``meta['family']``: its lines (``describe(checks=False)``).
    """

    analysis = "overview"
    title = "Model overview"
    config_cls = OverviewConfig

    # --------------------------------------------------------------- contents
    @property
    def architecture(self) -> dict[str, Any]:
        """The model's :class:`~workbench.models.ModelFacts` as a dict (without the self-check)."""
        return dict(self.meta["architecture"])

    @property
    def n_layers(self) -> int:
        return int(self.architecture["n_layers"])

    @property
    def sample_text(self) -> str:
        return str(self.meta["sample_text"])

    @property
    def matrix_stats(self) -> pd.DataFrame:
        """One row per layer x weight matrix: shape, norms, ranks, outlier ratio."""
        return self.tables["matrices"]

    @property
    def parameters(self) -> pd.DataFrame:
        """Parameter count per component."""
        return self.tables["parameters"]

    @property
    def sample_tokens(self) -> pd.DataFrame:
        """The sample text split into tokens: position, id, token."""
        return self.tables["tokens"]

    @property
    def matrices(self) -> list[str]:
        """Names of the weight matrices, in the model's order."""
        return list(dict.fromkeys(self.matrix_stats["matrix"]))

    @property
    def embedding_norms(self) -> EmbeddingNorms:
        """L2 norm of each token's embedding."""
        return self.tensors["embedding_norms"]

    def singular_values(self, matrix: str) -> LayerSpectra:
        """Singular values of ``matrix`` in every layer that has it (:meth:`layers_with`), descending."""
        return self.tensors[f"sv/{matrix}"]

    def layers_with(self, matrix: str) -> list[int]:
        """The layers that have ``matrix``: all, except where dense and mixture-of-experts layers alternate."""
        found = self.tensors.get(f"layers/{matrix}")
        return list(range(self.singular_values(matrix).shape[0])) if found is None else found.tolist()

    def spectrum(self, matrix: str, layer: int) -> Spectrum:
        return self.singular_values(matrix)[self.layers_with(matrix).index(layer)]

    def summary(self) -> list[tuple[str, str]]:
        arch = self.architecture
        return [
            ("model", self.model_id),
            ("architecture", f"{arch['architecture']}: {arch['n_layers']} layers, d_model {arch['d_model']}, "
                             f"{arch['n_heads']} heads ({arch['n_kv_heads']} key/value), d_mlp {arch['d_mlp']}"),
            *((k, v) for k, v in self.meta.get("family", {}).items() if k not in ("model", "architecture", "parameters", "family")),
            ("parameters", f"{arch['n_params']:,}"),
            ("fingerprint", self.fingerprint),
        ]


def _matrices(model, layer: int) -> dict[str, Tensor]:
    """Each weight matrix of ``layer`` as 2-D [in, out], heads (and experts) concatenated."""
    attn = model.attention_weights(layer)
    out = {
        "W_Q": attn.W_Q.permute(1, 0, 2).flatten(1),  # [d_model, head * d_head]
        "W_K": attn.W_K.permute(1, 0, 2).flatten(1),
        "W_V": attn.W_V.permute(1, 0, 2).flatten(1),
        "W_O": attn.W_O.flatten(0, 1),  # [head * d_head, d_model]
    }
    if model.facts.layers[layer].mlp == "moe":  # a mixture of experts: the router, the experts side by side, the shared expert
        moe = model.expert_weights(layer)
        out["W_router"] = moe.W_router
        out.update({f"experts {n}": m.permute(1, 0, 2).flatten(1) for n, m in (("W_in", moe.W_in), ("W_gate", moe.W_gate))})
        out["experts W_out"] = moe.W_out.flatten(0, 1)  # [expert * d_ff, d_model]
        mlp, prefix = moe.shared, "shared "
    else:
        mlp, prefix = model.mlp_weights(layer), ""
    if mlp is not None:
        out[prefix + "W_in"] = mlp.W_in
        if mlp.W_gate is not None:
            out[prefix + "W_gate"] = mlp.W_gate
        out[prefix + "W_out"] = mlp.W_out
    return out


def matrix_stats(sv: Float[Tensor, "layer rank"], weights: Float[Tensor, "layer n m"]) -> dict[str, Tensor]:
    """Per-layer scalar summaries of a stack of matrices and their singular values."""
    flat = weights.flatten(1).double()
    sv = sv.double()
    rms = flat.square().mean(-1).sqrt()
    return {
        "frobenius": flat.norm(dim=-1),
        "max_abs": flat.abs().amax(-1),
        "outlier_ratio": flat.abs().amax(-1) / rms,  # max |w| in units of the matrix' RMS
        "sigma_max": sv[:, 0],
        "stable_rank": sv.square().sum(-1) / sv[:, 0].square(),  # ||W||_F^2 / sigma_max^2
        "effective_rank": effective_rank(sv),  # exp of the spectral entropy (Roy & Vetterli)
    }


def _parameter_table(model) -> pd.DataFrame:
    groups: dict[str, int] = {}
    for name, size in model.parameter_sizes():  # sizes only: a checkpoint read from shards reads no weight here
        low = name.lower()
        if "lm_head" in low:
            group = "unembedding"
        elif any(k in low for k in ("embed", "wte", "wpe")):
            group = "embeddings"
        elif any(k in low for k in ("norm", ".ln", "ln_")):
            group = "norms"
        elif any(k in low for k in ("attn", "attention")):
            group = "attention"
        elif any(k in low for k in ("mlp", "ffn", "feed_forward", "expert", "moe")):
            group = "mlp"
        else:
            group = "other"
        groups[group] = groups.get(group, 0) + size
    total = sum(groups.values())
    rows = [{"component": g, "parameters": n, "share": n / total} for g, n in groups.items()]
    return pd.DataFrame(rows).sort_values("parameters", ascending=False, ignore_index=True)


@torch.no_grad()
def compute_overview(model: WeightSource, config: OverviewConfig) -> OverviewResult:
    model.require_finite_weights()
    facts = model.facts
    # One layer at a time: each matrix's spectrum and statistics are taken as soon as it is read, and only those
    # summaries are kept (holding every matrix in float32 until the end is ~27 GB at 7B shapes, ~280 GB at 70B).
    # A matrix may be in some layers only (dense and MoE layers mixed): summaries are kept per matrix name, in the
    # order the names first appear, and stacked over its layers at the end.
    per_name: dict[str, list[tuple[int, tuple[int, ...], Tensor, dict[str, Tensor]]]] = {}
    for layer in progress(range(facts.n_layers), desc="reading weights"):
        for name, matrix in _matrices(model, layer).items():
            one = matrix.float()[None]  # [1, in, out]
            sv = singular_values(one)  # on the matrix's device
            stats = {k: v.cpu() for k, v in matrix_stats(sv, one).items()}
            per_name.setdefault(name, []).append((layer, tuple(matrix.shape), sv.cpu(), stats))
            del one, matrix, sv
        release_freed()  # the layer's float32 / float64 temporaries: else resident memory keeps their high-water mark

    rows, tensors = [], {}
    for name, entries in per_name.items():
        layers = [layer for layer, *_ in entries]
        tensors[f"sv/{name}"] = torch.cat([sv for _, _, sv, _ in entries])
        if len(layers) != facts.n_layers:
            tensors[f"layers/{name}"] = torch.tensor(layers)
        for layer, shape, _, stats in entries:
            rows.append({"layer": layer, "matrix": name, "rows": shape[0], "cols": shape[1],
                         **{k: float(v[0]) for k, v in stats.items()}})
    tensors["embedding_norms"] = model.W_E.float().norm(dim=-1).cpu()

    ids = model.to_tokens(config.sample_text, prepend_bos=False)[0].tolist()
    tokens = pd.DataFrame({"position": range(len(ids)), "id": ids, "token": model.to_str_tokens(ids)})
    return OverviewResult(
        config=config,
        model_id=model.name,
        fingerprint=model.fingerprint(),
        tensors=tensors,
        tables={"matrices": pd.DataFrame(rows), "parameters": _parameter_table(model), "tokens": tokens},
        meta={"architecture": facts.to_dict(checks=False), "family": dict(facts.describe(checks=False)),
              "sample_text": config.sample_text},
    )


ANALYSIS = Analysis(
    name="overview",
    description="architecture card, parameter counts, per-layer weight norms and singular-value summaries",
    config_cls=OverviewConfig,
    result_cls=OverviewResult,
    compute=compute_overview,
    needs=("qkv", "values_mixed", "attn_write", "mlp_in", "mlp_write", "experts", "uniform_attention"),
    version=2,  # meta['architecture'] is the one fact record's dict (ModelFacts), no longer ModelInfo's
)
