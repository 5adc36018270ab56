"""Shared fixtures. Every test runs offline: HF hub access is switched off and any
socket connection to a non-loopback address fails the test."""

from __future__ import annotations

import os
import socket
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WORKBENCH_PROGRESS"] = "0"
# One cache per test session (the embedded model is converted once, ~20 s), unless given.
os.environ.setdefault("WORKBENCH_CACHE", tempfile.mkdtemp(prefix="workbench-test-cache-"))
# Under pytest-xdist (addopts: one worker per core) every worker computes on one thread: two workers with a
# thread per core each would spin-wait on each other's cores (workbench/_threads.py), and float32 sums split
# over a fixed thread count give the same bits in every worker.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["WORKBENCH_THREADS"] = "1"

import pytest

_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOCAL):
        raise AssertionError(f"test tried to reach the network: {address}")
    return _real_connect(self, address)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# The longest tests first, so that no worker is left with one of them at the end (seconds on one thread).
SLOW_FIRST = ("tests/test_notebooks.py::test_notebook_runs[", "tests/test_static.py::test_mypy",
              "tests/widgets/test_jupyterlab.py", "tests/test_wheel.py")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)),
                                     len(SLOW_FIRST)))


@pytest.fixture(autouse=True, scope="session")
def no_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(scope="session")
def tiny_llama():
    import workbench as wb

    return wb.load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    import workbench as wb

    return wb.load_model("tiny-gpt2")


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (real tier)."""
    import workbench as wb

    return wb.load_model()
