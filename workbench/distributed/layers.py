"""Weight-only analyses of a checkpoint's shards, layer-parallel: each worker reads and analyses a range of layers.

A worker opens the checkpoint with ``wb.load_weights`` and sees it through :class:`LayerRange`, a model whose
layers are that range (layer 0 of the view is the range's first layer); the analysis' own ``compute`` runs on
the view unchanged, and the parts are merged into the whole model's Result by a merge written against the
Result's documented contents, not the computation. What is not per layer (the embedding, the parameter
counts, the tokens) each part computes alike from the whole model; the merge takes it from the first.

An analysis is layer-parallel when its result is a concatenation over layers. The overview is (per-matrix
statistics and spectra, layer by layer). Head composition is not: it pairs each writer layer with every later
reader layer and draws its null from all layers, so it runs whole on one worker (``over_checkpoints`` runs one
per checkpoint side by side).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..cache import ResultCache, cache_key, get_cache
from ..engine.registry import get_analysis
from ..engine.runner import make_config
from ..errors import InputError
from ..models import load_weights
from ..models import weights as W
from ..models.base import ModelBase
from ..results import Result
from .cluster import Cluster, using
from .._threads import sized_threads
from .tasks import ModelSource, model_of


class LayerRange(ModelBase):
    """The layers ``layers`` of ``source`` as a model of ``len(layers)`` layers (a weight source: facts, weights
    and tokenizer, layer indices remapped). ``fingerprint``: the whole model's, which the caller computed
    together with its check of every weight for NaN or infinity (one pass); the view checks nothing again."""

    def __init__(self, source: Any, layers: Sequence[int], fingerprint: str):
        n = source.facts.n_layers
        if not layers or any(not 0 <= l < n for l in layers):
            raise InputError(f"layers {list(layers)} are not all in 0..{n - 1}")
        self.source, self.layers, self._fingerprint = source, tuple(layers), fingerprint
        self.tokenizer = source.tokenizer
        self.facts = source.facts.for_layers(self.layers)

    def _whole(self, layer: int) -> int:
        return self.layers[self._layer(layer)]

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return str(self.source.name)

    @property
    def device(self) -> torch.device:
        return self.source.device

    @property
    def dtype(self) -> torch.dtype:
        return self.source.dtype

    def fingerprint(self, *, verify: bool = False) -> str:
        return self._fingerprint

    def require_finite_weights(self) -> None:
        """Checked by the caller on every weight before splitting (the fingerprint's pass)."""

    def parameter_sizes(self) -> Iterator[tuple[str, int]]:
        return self.source.parameter_sizes()  # the whole model's: what its parameter table counts

    def mlp_activation(self, pre: Tensor) -> Tensor:
        return self.source.mlp_activation(pre)

    # -------------------------------------------------- raw reads, remapped
    def attention_weights(self, layer: int, *, expand_kv: bool = False) -> W.AttentionWeights:
        return self.source.attention_weights(self._whole(layer), expand_kv=expand_kv)

    def mlp_weights(self, layer: int) -> W.MLPWeights:
        return self.source.mlp_weights(self._whole(layer))

    def expert_weights(self, layer: int) -> W.ExpertWeights:
        return self.source.expert_weights(self._whole(layer))

    def norm_bias(self, layer: int | None, before: str = "attn", *, post: bool = False) -> Tensor | None:
        return self.source.norm_bias(None if layer is None else self._whole(layer), before, post=post)

    def _norm_weight(self, layer: int | None, sublayer: str, post: bool) -> Tensor | None:
        return self.source._norm_weight(None if layer is None else self.layers[layer], sublayer, post)

    def _qk_norm_params(self, layer: int) -> tuple[Tensor, Tensor] | None:
        return self.source._qk_norm_params(self.layers[layer])

    @property
    def W_E(self) -> Tensor:
        return self.source.W_E

    @property
    def W_U(self) -> Tensor:
        return self.source.W_U


def split_layers(n_layers: int, parts: int) -> list[tuple[int, ...]]:
    """``range(n_layers)`` in ``parts`` contiguous ranges as even as can be (none empty)."""
    parts = max(1, min(parts, n_layers))
    bounds = [round(i * n_layers / parts) for i in range(parts + 1)]
    return [tuple(range(a, b)) for a, b in itertools.pairwise(bounds)]


def merge_overview(source: Any, parts: Sequence[Result], ranges: Sequence[tuple[int, ...]]) -> Result:
    """The whole model's overview from the overviews of its layer ranges (see the module docstring)."""
    from ..analyses.overview.card import OverviewResult

    first = parts[0]
    tables = [p.tables["matrices"].assign(layer=[r[l] for l in p.tables["matrices"]["layer"]])
              for p, r in zip(parts, ranges)]
    matrices = pd.concat(tables, ignore_index=True)
    names = list(dict.fromkeys(matrices["matrix"]))  # first seen, in layer order: the single run's order
    order = matrices["matrix"].map({n: i for i, n in enumerate(names)})
    matrices = matrices.assign(_order=order).sort_values(["_order", "layer"], kind="stable")
    matrices = matrices.drop(columns="_order").reset_index(drop=True)

    tensors: dict[str, Tensor] = {}
    for name in names:
        spectra, layers = [], []
        for p, r in zip(parts, ranges):
            found = p.tensors.get(f"sv/{name}")
            if found is None:
                continue
            local = p.tensors.get(f"layers/{name}")
            spectra.append(found)
            layers += [r[l] for l in (range(len(found)) if local is None else local.tolist())]
        tensors[f"sv/{name}"] = torch.cat(spectra)
        if len(layers) != source.facts.n_layers:
            tensors[f"layers/{name}"] = torch.tensor(layers)
    tensors.update({k: v for k, v in first.tensors.items() if not k.startswith(("sv/", "layers/"))})
    meta = {**first.meta, "architecture": source.facts.to_dict(checks=False),
            "family": dict(source.facts.describe(checks=False))}
    return OverviewResult(config=first.config, model_id=first.model_id, fingerprint=first.fingerprint,
                          tensors=tensors, tables={**first.tables, "matrices": matrices}, meta=meta)


# analysis -> how its layer ranges' results make the whole model's
MERGES: dict[str, Callable[[Any, Sequence[Result], Sequence[tuple[int, ...]]], Result]] = {"overview": merge_overview}


def layer_parallel(folder: str | os.PathLike, analysis: str = "overview", *, cluster: Cluster | str | None = None,
                   parts: int | None = None, cache: bool | ResultCache = True, **options: Any) -> Result:
    """Weight-only ``analysis`` of the checkpoint in ``folder`` (read from its shards, as ``wb.load_weights``),
    its layers split into ``parts`` contiguous ranges (default: one per worker) analysed side by side on the
    cluster. Equal to ``run_analysis(analysis, wb.load_weights(folder), **options)`` and cached under the same
    key, so either finds the other's result."""
    if analysis not in MERGES:
        raise InputError(f"{analysis} is not layer-parallel (these are: {sorted(MERGES)}): its result is not a "
                         "concatenation over layers; run it whole, e.g. wb.distributed.over_checkpoints")
    folder = str(Path(folder).expanduser().resolve())
    source = load_weights(folder)  # on this process: headers, config and tokenizer only
    spec = get_analysis(analysis)
    config = make_config(analysis, None, **options)
    if spec.prepare is not None:
        config = spec.prepare(source, config)
    source.require_finite_weights()  # one pass over every weight, which also makes the fingerprint
    fingerprint = source.fingerprint()

    def compute() -> Result:
        with using(cluster) as c:
            ranges = split_layers(source.facts.n_layers, parts or c.n_workers)
            found = c.map(layer_part_task, [(folder, analysis, r, fingerprint, config) for r in ranges],
                          desc=f"{analysis}, layer ranges")
        return MERGES[analysis](source, found, ranges)

    if cache is False:
        return compute()
    store = cache if isinstance(cache, ResultCache) else get_cache()
    return store.get_or_compute(cache_key(analysis, config, fingerprint, spec.version), compute, analysis)


def layer_part_task(item: tuple[str, str, tuple[int, ...], str, Any]) -> Result:
    """Analysis ``name`` computed on ``layers`` of the checkpoint in ``folder`` (a :class:`LayerRange`),
    uncached: a part, merged into the whole model's result by the caller (who caches that)."""
    folder, name, layers, fingerprint, config = item
    source = model_of(ModelSource(folder, weights_only=True))
    with sized_threads():  # as run_analysis sizes a whole run's threads (one on a local cluster's worker)
        return get_analysis(name).compute(LayerRange(source, layers, fingerprint), config)
