"""Set-up of every worker process (imported only where Dask is: it subclasses Dask's ``WorkerPlugin``)."""

from __future__ import annotations

import torch
from distributed.diagnostics.plugin import WorkerPlugin

from .._progress import set_progress
from .._threads import thread_count


class WorkerSetup(WorkerPlugin):
    """On each worker, now and on every restart: torch's threads sized by ``WORKBENCH_THREADS`` (1 on a local
    cluster; else the cores free there), and no progress bars (they would interleave on a shared terminal).
    Set here, not by ``OMP_NUM_THREADS`` alone: a forked worker inherits a thread setting already made."""

    name = "workbench-setup"
    idempotent = True

    def setup(self, worker) -> None:
        torch.set_num_threads(thread_count())
        set_progress(False)
