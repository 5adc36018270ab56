"""Thread counts sized to the cores other processes leave free, so a busy machine slows work down in
proportion instead of by 20-100x.

PyTorch's CPU kernels run on OpenMP threads that spin while they wait for each other. With every core's
worth of threads and another process busy on the same cores, the spinning threads take turns with that
process and each parallel region waits for the slowest: measured on a 2-core machine next to another
PyTorch job, head composition of the embedded model took 206 s instead of 10 s. With one thread it took
22 s; letting OpenMP sleep instead (``OMP_WAIT_POLICY=PASSIVE``) also helps under load but made the idle
machine up to 2.7x slower, so the workbench instead looks, before each analysis, at how busy the cores are
(``/proc/stat`` over 50 ms, the workbench's own time subtracted) and uses only the free ones; the setting
is restored afterwards. Only the cores the process may use count: its CPU affinity (``taskset``, a container's
cpuset; only those CPUs' lines of ``/proc/stat`` are read) and its cgroup's CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``), so a pinned or CPU-limited container on a busy node is sized to its own share.
``WORKBENCH_THREADS=N`` fixes the count; ``WORKBENCH_THREADS=all`` turns sizing off.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import torch


PROC_STAT = Path("/proc/stat")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity: ``taskset``, a container's cpuset)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cgroup_cpu_limit() -> float | None:
    """CPUs' worth of time the process's cgroup may use (its quota over its period, the tightest along the path
    up to the root), or None where there is no quota. cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us``."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            folders = _up_to_root(CGROUP_ROOT, path)
            limits += [_v2_limit(folder / "cpu.max") for folder in folders]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own mount
            for mount in (CGROUP_ROOT / controllers, CGROUP_ROOT / "cpu,cpuacct", CGROUP_ROOT / "cpu"):
                if mount.is_dir():
                    limits += [_v1_limit(folder) for folder in _up_to_root(mount, path)]
                    break
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _up_to_root(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and every folder above it up to ``mount`` (a container sees its own cgroup as the root)."""
    folder = mount / path.strip("/")
    return [folder, *[p for p in folder.parents if p == mount or mount in p.parents]]


def _v2_limit(file: Path) -> float | None:
    try:
        quota, period = file.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cores() -> int:
    """Cores this process may use: its affinity, capped by its cgroup's CPU quota (at least 1)."""
    n = len(allowed_cpus())
    limit = cgroup_cpu_limit()
    return max(1, min(n, math.floor(limit)) if limit is not None else n)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot of the CPUs in ``cpus``, from /proc/stat's per-CPU lines; None
    where there is no such file."""
    busy = total = 0
    try:
        with PROC_STAT.open() as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name == "cpu":  # all CPUs together: not ours to count
                    continue
                if not (name.startswith("cpu") and name[3:].isdigit()):
                    break  # the per-CPU lines come first, then interrupts and the rest
                if int(name[3:]) in cpus:
                    fields = [int(v) for v in rest.split()]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                    t = sum(fields[:8])  # guest time is already counted in user
                    busy, total = busy + t - idle, total + t
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total > 0 else None


def _own_ticks() -> int:
    """This process's user + system clock ticks."""
    times = os.times()
    return round((times.user + times.system) * os.sysconf("SC_CLK_TCK"))


def free_cores(window: float = 0.05) -> float:
    """Cores not busy with other processes over the next ``window`` seconds, counting only the CPUs this process
    may run on and at most its cgroup quota (all of :func:`cores` where unknown)."""
    cpus, usable = allowed_cpus(), cores()
    first, own = _cpu_ticks(cpus), _own_ticks()
    if first is None:
        return float(usable)
    time.sleep(window)
    second, own_after = _cpu_ticks(cpus), _own_ticks()
    if second is None:  # /proc/stat went away meanwhile
        return float(usable)
    busy, total = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return float(usable)
    others = max(0, busy - (own_after - own)) / total * len(cpus)
    return max(0.0, min(float(usable), len(cpus) - others))


def thread_count() -> int:
    """Threads an analysis should use now: ``WORKBENCH_THREADS`` if set, else the free cores (at least 1)."""
    setting = os.environ.get("WORKBENCH_THREADS", "").strip().lower()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    if setting == "all":
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), cores(), round(free_cores())))


@contextmanager
def sized_threads() -> Iterator[int]:
    """Run the block with :func:`thread_count` threads; the previous setting comes back afterwards."""
    before = torch.get_num_threads()
    n = thread_count()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
