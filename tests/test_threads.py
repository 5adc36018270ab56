"""Thread counts sized to the free cores: restored afterwards, overridable, and shrinking next to a busy process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

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
