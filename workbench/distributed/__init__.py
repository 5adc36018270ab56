"""Work bigger than one machine, on a Dask cluster (``pip install 'lm-workbench[cluster]'``).

A local cluster is started by default (one single-threaded worker process per core); ``cluster="tcp://..."`` or
``with wb.distributed.cluster(address) as c:`` runs on an existing one. Three workloads, each equal to the
single-process run and cached under the same keys:

- :func:`attribute_dataset`: attribution of a dataset of prompts, one task per prompt, resumable;
- :func:`over_checkpoints`: one analysis over many checkpoints of a training run, as a :class:`CheckpointSeries`;
- :func:`layer_parallel`: a weight-only analysis of a checkpoint's shards, its layers split across workers.

Importing this package does not import Dask; starting a cluster does.
"""

from .checkpoints import over_checkpoints, run_checkpoints
from .cluster import Cluster, cluster
from .dataset import DatasetRun, attribute_dataset
from .layers import LayerRange, layer_parallel, split_layers
from .series import CheckpointSeries, checkpoint_series

__all__ = [
    "CheckpointSeries", "Cluster", "DatasetRun", "LayerRange", "attribute_dataset", "checkpoint_series", "cluster",
    "layer_parallel", "over_checkpoints", "run_checkpoints", "split_layers",
]
