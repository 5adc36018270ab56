"""The hub probe goes through huggingface_hub's HTTP session: proxies and offline mode apply, no raw socket."""

from __future__ import annotations

import socket
import threading

import pytest

from workbench.models import sources


@pytest.fixture
def proxy(monkeypatch):
    """A proxy on the loopback that records the first request line and refuses it; HTTPS_PROXY points at it and
    huggingface_hub's session is made again so that it reads the variable."""
    import huggingface_hub
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen: list[str] = []

    def serve():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            seen.append(conn.recv(4096).decode(errors="replace").splitlines()[0])
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
    huggingface_hub.close_session()
    yield seen
    server.close()
    thread.join(timeout=5)
    monkeypatch.undo()
    huggingface_hub.close_session()  # the next session reads the environment as it was


def test_the_probe_goes_through_the_proxy(proxy):
    assert sources._hub_reachable(timeout=5.0) is False  # the proxy refused the tunnel
    assert proxy and proxy[0].startswith("CONNECT huggingface.co:443")


def test_offline_mode_makes_no_request(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: pytest.fail("offline, yet a request was made"))
    assert sources._hub_reachable() is False
