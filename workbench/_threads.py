"""Thread counts sized to the cores other processes leave free, so a busy machine slows work down in
proportion instead of by 20-100x.

PyTorch's CPU kernels run on OpenMP threads that spin while they wait for each other. With every core's
worth of threads and another process busy on the same cores, the spinning threads take turns with that
process and each parallel region waits for the slowest: measured on a 2-core machine next to another
PyTorch job, head composition of the embedded model took 206 s instead of 10 s. With one thread it took
22 s; letting OpenMP sleep instead (``OMP_WAIT_POLICY=PASSIVE``) also helps under load but made the idle
machine up to 2.7x slower, so the workbench instead looks, before each analysis, at how busy the cores are
(``/proc/stat`` over 50 ms, the workbench's own time subtracted) and uses only the free ones; the setting
is restored afterwards. ``WORKBENCH_THREADS=N`` fixes the count; ``WORKBENCH_THREADS=all`` turns sizing off.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from collections.abc import Iterator

import torch


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _own_ticks() -> int:
    """This process's user + system clock ticks."""
    times = os.times()
    return round((times.user + times.system) * os.sysconf("SC_CLK_TCK"))


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def free_cores(window: float = 0.05) -> float:
    """Cores not busy with other processes over the next ``window`` seconds (all of them where unknown)."""
    first, own = _cpu_ticks(), _own_ticks()
    if first is None:
        return float(cores())
    time.sleep(window)
    second, own_after = _cpu_ticks(), _own_ticks()
    if second is None:  # /proc/stat went away meanwhile
        return float(cores())
    busy, total = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return float(cores())
    others = max(0, busy - (own_after - own)) / total * (os.cpu_count() or 1)
    return max(0.0, cores() - others)


def thread_count() -> int:
    """Threads an analysis should use now: ``WORKBENCH_THREADS`` if set, else the free cores (at least 1)."""
    setting = os.environ.get("WORKBENCH_THREADS", "").strip().lower()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    if setting == "all":
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), round(free_cores())))


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
