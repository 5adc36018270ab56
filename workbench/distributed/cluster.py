"""The Dask cluster the workbench runs on: a local one started here by default, or an existing one by address.

A local cluster has one worker process per core this process may use, each with one thread: a PyTorch CPU
kernel is already parallel inside, and two workers' OpenMP pools on the same cores spin against each other
(``workbench/_threads.py``), so every worker is told to use one thread (``OMP_NUM_THREADS=1``,
``WORKBENCH_THREADS=1``) and the parallelism is the workers'. A worker killed mid-task (out of memory, a
pre-empted node) is restarted by its nanny and Dask runs its tasks again elsewhere; with the workbench's
result cache the work done before the kill is read back, not redone.

An existing cluster (``address="tcp://host:8786"``, started with ``dask scheduler`` / ``dask worker
--nthreads 1``): every worker must have the same workbench installed (checked when connecting) and see the
same files: the model folders or checkpoints given by path and the cache folder (``cache_root=``, a shared
filesystem), where each task stores its result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._extras import require
from .._progress import progress
from .._threads import cores
from .._version import __version__
from ..errors import InputError, WorkbenchError

# every worker computes on one thread: the workers are the parallelism (see the module docstring)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "WORKBENCH_THREADS": "1"}

_current: list[Cluster] = []  # the clusters entered with ``with``, innermost last


# what the process that forks the local workers imports once: each worker starts with the workbench loaded
PRELOAD = ("distributed", "workbench.distributed._preload")


def _fork_workers_from_a_loaded_server() -> None:
    """Start local workers by forking a server that imported the workbench once (multiprocessing's
    ``forkserver``), not each by a fresh interpreter importing torch and transformers again (Dask's default
    ``spawn``: seconds per worker, tens of seconds on a busy machine). It is Dask's own setting
    (``distributed.worker.multiprocessing-method``), set for this process unless already chosen; the server
    does no computing, so no thread pool is forked."""
    import dask
    from distributed.utils import get_mp_context

    key = "distributed.worker.multiprocessing-method"
    if dask.config.get(key) != "spawn":  # chosen by the user (or already set here)
        return
    dask.config.set({key: "forkserver"})
    get_mp_context().set_forkserver_preload(list(PRELOAD))  # after Dask's own preload list, replacing it


def _workbench_version() -> str:
    """Runs on each worker: the workbench it imports."""
    return __version__


class Cluster:
    """A Dask client with the workbench's defaults (see the module docstring).

    ``address``: an existing scheduler (``"tcp://host:8786"``); None starts a local cluster of ``n_workers``
    processes (default: one per core this process may use: its affinity and cgroup CPU quota), one thread each. ``cluster_options`` go to
    ``distributed.LocalCluster`` (e.g. ``memory_limit="8GB"``).
    """

    def __init__(self, address: str | None = None, *, n_workers: int | None = None, **cluster_options: Any):
        distributed = require("distributed", "wb.distributed (running on a Dask cluster)")
        self._local = None
        if address is None:
            n = n_workers if n_workers is not None else cores()
            if n < 1:
                raise InputError(f"n_workers must be at least 1, got {n}")
            _fork_workers_from_a_loaded_server()
            options = {"n_workers": n, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                       "dashboard_address": ":0",  # any free port: a second cluster on the machine is no clash
                       "silence_logs": logging.ERROR, "env": WORKER_ENV, **cluster_options}
            self._local = distributed.LocalCluster(**options)
            self.client = distributed.Client(self._local)
        else:
            if n_workers is not None or cluster_options:
                raise InputError("n_workers and cluster options size a local cluster; an existing one at "
                                 f"{address} is sized where it was started")
            self.client = distributed.Client(address)
        try:
            from .worker import WorkerSetup

            self.client.register_plugin(WorkerSetup(), name=WorkerSetup.name)
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        versions = self.client.run(_workbench_version)
        other = {w: v for w, v in versions.items() if v != __version__}
        if not versions:
            raise WorkbenchError(f"the cluster at {self.address} has no workers")
        if other:
            raise WorkbenchError(f"workers run another workbench than this process ({__version__}): {other}; "
                                 "install the same version on every worker")

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> its process id (on its own machine)."""
        return dict(self.client.run(os.getpid))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, desc: str = "tasks") -> list[Any]:
        """``fn(item)`` for each item on the workers, in the items' order; a worker lost mid-task has its tasks
        run again elsewhere (Dask's ``allowed-failures``: a task whose worker dies three times fails)."""
        from distributed import as_completed

        futures = self.client.map(fn, list(items), pure=False)
        for _ in progress(as_completed(futures), total=len(futures), desc=desc):
            pass
        return list(self.client.gather(futures))

    def close(self) -> None:
        self.client.close()
        if self._local is not None:
            self._local.close()

    def __enter__(self) -> Cluster:
        _current.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.remove(self)
        self.close()

    def __repr__(self) -> str:
        kind = "local" if self._local is not None else "existing"
        return f"Cluster({kind}, {self.address}, {self.n_workers} workers)"


def cluster(address: str | None = None, *, n_workers: int | None = None, **cluster_options: Any) -> Cluster:
    """Start a local cluster (or connect to ``address``); use it as ``with wb.distributed.cluster() as c:``, and
    the distributed functions called inside run on it."""
    return Cluster(address, n_workers=n_workers, **cluster_options)


@contextmanager
def using(given: Cluster | str | None) -> Iterator[Cluster]:
    """The cluster a distributed function runs on: ``given`` (a :class:`Cluster` or an address), else the one
    entered with ``with``, else a local cluster started for this call and closed after it."""
    if isinstance(given, Cluster):
        yield given
    elif given is None and _current:
        yield _current[-1]
    else:
        with Cluster(given) as started:
            yield started
