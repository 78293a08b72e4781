"""A real uvicorn server on a free loopback port, in a thread, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from genq.app import App
from genq.server import ServerSettings, create_server
from genq.store.sqlite import SQLiteStore


@contextlib.contextmanager
def serve_asgi(asgi: object, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1:<free port>; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", lifespan="on",  # type: ignore[arg-type]
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def serve_app(app: App, db: Path, *, heartbeat: float = 15.0) -> Iterator[str]:
    """``genq serve`` for ``app`` with its store in ``db``; yields the base URL."""
    server = create_server(app, SQLiteStore(db), ServerSettings(heartbeat=heartbeat))
    with serve_asgi(server) as url:
        yield url
