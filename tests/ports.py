"""A free TCP port for tests that start two processes (importable from tests/; imports nothing heavy, so that
processes spawned by a test can import it without transformers)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: two-process runs rendezvous there, so that runs side by side never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
