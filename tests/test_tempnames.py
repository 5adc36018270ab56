"""Temporary names are unique across hosts sharing a cache, and cleanup removes only certainly dead leftovers:
this host's whose process is gone, or any host's untouched for a day — never another host's write under way."""

from __future__ import annotations

import os
import time

import pytest

import workbench as wb
from workbench import _tempnames
from workbench._tempnames import STALE_AFTER, host, is_abandoned, unique_suffix
from workbench.models._atomic import atomic_folder

DEAD_PID = 999_999_999


def test_names_carry_host_and_process_and_never_repeat():
    a, b = unique_suffix(), unique_suffix()
    assert a != b and a.startswith(f"{host()}-{os.getpid()}-")
    assert "-" not in host() and "/" not in host()


def test_cleanup_keeps_other_hosts_writes_under_way(tmp_path, monkeypatch):
    monkeypatch.setattr(_tempnames.socket, "gethostname", lambda: "node-a.cluster")
    mine_dead = tmp_path / f".tmp-model-{host()}-{DEAD_PID}-abcd1234"
    mine_alive = tmp_path / f".tmp-model-{host()}-{os.getpid()}-abcd1234"
    theirs = tmp_path / f".tmp-model-node_b.cluster-{DEAD_PID}-abcd1234"  # that pid may live on node b
    theirs_old = tmp_path / f".tmp-model-node_b.cluster-{DEAD_PID}-00001111"
    for folder in (mine_dead, mine_alive, theirs, theirs_old):
        folder.mkdir()
        (folder / "weights").write_text("x")
    old = time.time() - STALE_AFTER - 60
    for path in (theirs_old, theirs_old / "weights"):
        os.utime(path, (old, old))
    atomic_folder(tmp_path / "model", lambda folder: folder.mkdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", mine_alive.name, theirs.name])


def test_a_folder_still_being_written_is_not_old(tmp_path):
    folder = tmp_path / f".tmp-x-other-{DEAD_PID}-abcd1234"
    folder.mkdir()
    (folder / "shard").write_text("x")
    old = time.time() - 2 * STALE_AFTER
    os.utime(folder, (old, old))  # the folder's own time is old, its file was written just now
    assert not is_abandoned(folder, f"other-{DEAD_PID}-abcd1234")
    assert is_abandoned(folder, f"other-{DEAD_PID}-abcd1234", now=time.time() + 2 * STALE_AFTER)


def test_result_and_report_temp_files_are_unique(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def record(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", record)
    result = wb.Result(config=None, model_id="m", fingerprint="f")
    result.save(tmp_path / "r.safetensors")
    result.save(tmp_path / "r.safetensors")
    wb.report([result], tmp_path / "report.html")
    assert len(set(seen)) == 3 and all(f"{host()}-{os.getpid()}-" in name for name in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.safetensors", "report.html"]


@pytest.mark.parametrize("name", ["node 7/gpu", "a-b-c", ""])
def test_odd_host_names_still_make_one_file_name(name, monkeypatch):
    monkeypatch.setattr(_tempnames.socket, "gethostname", lambda: name)
    suffix = unique_suffix()
    assert "/" not in suffix and " " not in suffix and suffix.count("-") == 2
