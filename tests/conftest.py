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

import pytest

_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOCAL):
        raise AssertionError(f"test tried to reach the network: {address}")
    return _real_connect(self, address)


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
