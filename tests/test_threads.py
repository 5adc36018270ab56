"""Thread counts sized to the free cores: restored afterwards, overridable, and shrinking next to a busy process."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest
import torch

from pathlib import Path

from workbench import _threads
from workbench._threads import cores, free_cores, sized_threads, thread_count


def test_the_setting_comes_back_and_the_override_wins(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("WORKBENCH_THREADS", "1")
    with sized_threads() as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("WORKBENCH_THREADS", "all")
    assert thread_count() == before


@pytest.mark.skipif(not sys.platform.startswith("linux") or cores() < 2, reason="reads /proc/stat; needs 2 cores")
def test_a_busy_neighbour_takes_a_core():
    assert 0.0 <= free_cores() <= cores()
    busy = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        time.sleep(0.3)
        assert free_cores(0.3) <= cores() - 0.5  # one core taken by the loop
    finally:
        busy.kill()
        busy.wait()


def _stat(per_cpu: dict[int, tuple[int, int]]) -> str:
    """A /proc/stat with per-CPU (busy, idle) ticks: user=busy, idle=idle, the rest 0."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{n} {busy} 0 0 {idle} 0 0 0 0 0 0" for n, (busy, idle) in sorted(per_cpu.items())]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 5", ""])


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake 8-CPU machine: /proc/stat, /proc/self/cgroup and /sys/fs/cgroup under tmp_path, an affinity."""
    stat, cgroup, root = tmp_path / "stat", tmp_path / "cgroup", tmp_path / "sys-fs-cgroup"
    root.mkdir()
    cgroup.write_text("0::/\n")
    monkeypatch.setattr(_threads, "PROC_STAT", stat)
    monkeypatch.setattr(_threads, "PROC_CGROUP", cgroup)
    monkeypatch.setattr(_threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(_threads, "_own_ticks", lambda: 0)
    monkeypatch.setattr(_threads.time, "sleep", lambda s: None)
    monkeypatch.delenv("WORKBENCH_THREADS", raising=False)
    monkeypatch.setattr(_threads.torch, "get_num_threads", lambda: 8)
    return stat, cgroup, root, monkeypatch


def _busy_then(stat, monkeypatch, busy_cpus: set[int], n: int = 8) -> None:
    """Two /proc/stat readings 100 ticks apart in which ``busy_cpus`` were busy all the time, the others idle."""
    readings = itertools.cycle([_stat({c: (50, 50) for c in range(n)}),
                                _stat({c: (150, 50) if c in busy_cpus else (50, 150) for c in range(n)})])
    real_open = Path.open

    def open_stat(self, *args, **kwargs):
        if self == stat:
            with open(stat, "w") as f:  # the builtin: Path.write_text would come back here
                f.write(next(readings))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_stat)


def test_only_the_cpus_of_the_affinity_are_counted(machine):
    stat, _, _, monkeypatch = machine
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {2, 3})
    _busy_then(stat, monkeypatch, busy_cpus={0, 1, 4, 5, 6, 7})  # the rest of the node is saturated
    assert _threads.cores() == 2 and _threads.free_cores() == 2.0 and thread_count() == 2


def test_a_busy_cpu_of_the_affinity_is_taken(machine):
    stat, _, _, monkeypatch = machine
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {2, 3, 4})
    _busy_then(stat, monkeypatch, busy_cpus={3})
    assert _threads.free_cores() == pytest.approx(2.0)


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "250000 100000\n"}, 2.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "max 100000\n", "job/cpu.max": "300000 100000\n"}, 3.0),  # this cgroup's own quota
    ({"cpu.max": "100000 100000\n", "job/cpu.max": "300000 100000\n"}, 1.0),  # a parent's tighter one
])
def test_cgroup_v2_quota(machine, files, limit):
    stat, cgroup, root, _ = machine
    cgroup.write_text("0::/job\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert _threads.cgroup_cpu_limit() == limit
    assert _threads.cores() == (8 if limit is None else max(1, int(limit)))


def test_cgroup_v1_quota_caps_threads_even_on_an_idle_node(machine):
    stat, cgroup, root, monkeypatch = machine
    cgroup.write_text("12:memory:/\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit above it
    _busy_then(stat, monkeypatch, busy_cpus=set())
    assert _threads.cgroup_cpu_limit() == 3.0 and _threads.free_cores() == 3.0 and thread_count() == 3


def test_without_proc_files_all_usable_cores_are_used(machine):
    stat, cgroup, _, _ = machine
    cgroup.unlink()
    assert _threads.cgroup_cpu_limit() is None and _threads.free_cores() == 8.0
