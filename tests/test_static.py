"""Lint (ruff) and type check (mypy), configured in pyproject.toml, so CI runs them with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} is not installed here: ./setup.sh --test installs it")
    return str(path)


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"


def test_ruff():
    _run(_tool("ruff"), "check", "--no-cache")


def test_mypy():
    # the cache (.mypy_cache) makes a repeat run take seconds instead of ~30
    _run(_tool("mypy"))
