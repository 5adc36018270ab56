"""Every user error is one line, said before any work, and leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.commands import common


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("workbench: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks(capsys):
    assert "no CUDA GPU" in _error(capsys, ["info", "--model", "tiny-llama", "--device", "cuda"])
    assert "unknown device 'banana'" in _error(capsys, ["info", "--model", "tiny-llama", "--device", "banana"])


@pytest.fixture
def no_model_load(monkeypatch):
    """Arguments must be checked before the model loads: loading fails the test."""
    def fail(args):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr(common, "load", fail)
    monkeypatch.setattr("workbench.cli.load", fail)


def test_report_arguments_are_checked_before_any_work(capsys, tmp_path, no_model_load):
    assert "is a folder" in _error(capsys, ["report", "--model", "tiny-llama", "--out", str(tmp_path)])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file, not a folder" in _error(capsys, ["report", "--out", str(blocker / "r.html")])
    assert "unknown analysis 'nosuch'" in _error(capsys, ["report", "--analyses", "overview", "nosuch"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written, no temporary file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_into_a_read_only_folder(capsys, tmp_path, no_model_load):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "not writable" in _error(capsys, ["report", "--out", str(locked / "r.html")])


def test_a_failed_write_leaves_no_temporary_file(tiny_llama, tmp_path, monkeypatch):
    overview = wb.model_overview(tiny_llama)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(wb.InputError, match="No space left"):
        wb.report([overview], tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_weights_or_tokenizer(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert "no weights" in _error(capsys, ["info", "--model", str(tmp_path)])
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert "no tokenizer" in _error(capsys, ["info", "--model", str(tmp_path)])
