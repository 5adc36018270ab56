"""One analysis over many checkpoints of a training run: one task per checkpoint, results cached per checkpoint."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._paths import cache_root as resolved_root
from ..engine.registry import get_analysis
from ..errors import InputError
from ..results import Result
from .cluster import Cluster, using
from .series import CheckpointSeries, checkpoint_series
from .tasks import ModelSource, TaskOutput, analysis_task

# analyses that read weights only: their checkpoints are read from shards (wb.load_weights), nothing built
WEIGHT_ONLY = ("overview", "head_composition")


def run_checkpoints(checkpoints: Sequence[str | os.PathLike], analysis: str, *, cluster: Cluster | str | None = None,
                    weights_only: bool | None = None, cache: bool = True, cache_root: str | os.PathLike | None = None,
                    **options: Any) -> list[Result]:
    """``analysis`` with ``options`` on every checkpoint folder, side by side on the cluster, in the given order.

    ``weights_only`` (default: for the weight-only analyses, overview and head composition): read each
    checkpoint from its shards with ``wb.load_weights`` instead of loading it with ``wb.load_model`` (same
    fingerprint, same results). Each result is cached under the key a single-process run uses."""
    get_analysis(analysis)  # a clear error for an unknown name, before any work
    if isinstance(checkpoints, str | os.PathLike) or not checkpoints:
        raise InputError("checkpoints must be a non-empty list of checkpoint folders")
    folders = [Path(c).expanduser().resolve() for c in checkpoints]
    missing = [str(f) for f in folders if not f.exists()]
    if missing:
        raise InputError(f"no such checkpoint: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    shards = analysis in WEIGHT_ONLY if weights_only is None else weights_only
    root = str(resolved_root(cache_root))
    tasks = [(ModelSource(str(f), weights_only=shards), root, cache, analysis, options) for f in folders]
    with using(cluster) as c:
        outputs: list[TaskOutput] = c.map(analysis_task, tasks, desc=f"{analysis} on {len(tasks)} checkpoints")
    return [o.result for o in outputs]


def over_checkpoints(checkpoints: Sequence[str | os.PathLike], analysis: str = "head_composition", *,
                     cluster: Cluster | str | None = None, weights_only: bool | None = None, cache: bool = True,
                     cache_root: str | os.PathLike | None = None, **options: Any) -> CheckpointSeries:
    """:func:`run_checkpoints`, then the series: a row of summary numbers per checkpoint (its step from the
    folder's name, ``step1000``), the analysis' main table stacked, and a figure across checkpoints."""
    results = run_checkpoints(checkpoints, analysis, cluster=cluster, weights_only=weights_only, cache=cache,
                              cache_root=cache_root, **options)
    return checkpoint_series(results, [Path(c).name for c in checkpoints], analysis=analysis, options=options)
