"""Shared parts of the HTTP API, client and CLI tests (tests/test_http_*.py, test_cli.py).

Everything is real: a uvicorn server on a free loopback port in a thread of this process
(``LiveServer``, which can stop and start again on the same port and database), with
genq's own connection limits as ``genq serve`` has them (``settings.limits``), a real
SQLite file, real httpx, and ``ChaosProxy``, a TCP proxy on loopback that cuts
connections at random byte offsets. The fixtures are registered in conftest.py.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from genq.app import App
from genq.models import Job, new_job_id
from genq.server import ApiKeys, ServerSettings, create_server
from genq.server.api import ServerState
from genq.server.connections import GuardedConfig
from genq.store.base import Store, SubmitPolicy
from genq.store.sqlite import SQLiteStore

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
GENQ_BIN = Path(sys.executable).parent / "genq"
# Fast settings: heartbeats every 0.2 s, reconnect hint 50 ms, short shutdown grace.
FAST = ServerSettings(heartbeat=0.2, retry_ms=50, shutdown_grace=0.5)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def serves(response: httpx.Response) -> bool:
    """``/readyz``'s answer says the server is up and its store answers: 200, or 503
    ``not_ready`` (no worker is ready for some function yet: a server without workers,
    or whose models still load, is up but honestly not ready)."""
    if response.status_code == 200:
        return True
    if response.status_code != 503:
        return False
    try:
        return bool(response.json()["error"]["code"] == "not_ready")
    except (ValueError, KeyError, TypeError):
        return False


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def free_port() -> int:
    with _listening_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """``create_server(app, SQLiteStore(db), settings)`` under uvicorn, in a thread."""

    app: App
    db: Path
    settings: ServerSettings
    port: int = 0
    make_store: Callable[[], Store] | None = None  # default: SQLiteStore(db)
    asgi: Starlette | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> ServerState:
        assert self.asgi is not None
        state: ServerState = self.asgi.state.genq
        return state

    def start(self) -> LiveServer:
        """Start (again, on the same port and database after ``stop``); waits for /readyz."""
        assert self._thread is None, "already running"
        sock = _listening_socket(self.port)
        self.port = sock.getsockname()[1]
        store = SQLiteStore(self.db) if self.make_store is None else self.make_store()
        self.asgi = create_server(self.app, store, self.settings)
        config = GuardedConfig(self.asgi, self.settings.limits, host="127.0.0.1",
                               port=self.port, log_level="warning", lifespan="on", ws="none",
                               timeout_graceful_shutdown=1)
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        try:
            with httpx.Client(base_url=self.url, timeout=2) as http:
                def healthy() -> bool:
                    assert self._thread is not None and self._thread.is_alive(), \
                        "uvicorn exited during start-up"
                    try:
                        return serves(http.get("/readyz"))
                    except httpx.TransportError:
                        return False

                wait_until(healthy, 30, what="/readyz (its store to answer)")
        finally:
            sock.close()  # uvicorn holds its own reference while serving
        return self

    def stop(self) -> None:
        """Graceful stop: open streams are cut after 1 s, then workers get their grace."""
        if self._thread is None:
            return
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(60)
        alive = self._thread.is_alive()
        self._thread = self._server = None
        assert not alive, "uvicorn did not stop"

    def restart(self) -> None:
        self.stop()
        self.start()


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``make_server(app=None, db=None, **settings)``: a started LiveServer (stopped at the
    end of the test). Settings default to FAST; the app to ``apps.http_app:app``."""
    from tests.apps.http_app import app as default_app

    servers: list[LiveServer] = []

    def make(app: App | None = None, db: Path | None = None, **settings: Any) -> LiveServer:
        path = db or tmp_path / f"server{len(servers)}.sqlite3"
        live = LiveServer(app or default_app, path, replace(FAST, **settings))
        servers.append(live)
        return live.start()

    yield make
    for live in reversed(servers):
        live.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> LiveServer:
    """A server with in-process workers."""
    return make_server()


@pytest.fixture
def idle_server(make_server: ServerFactory) -> LiveServer:
    """A server without workers: submitted jobs stay queued until cancelled."""
    return make_server(workers=False)


@pytest.fixture
def keyed_server(make_server: ServerFactory) -> LiveServer:
    """A server with API keys: ``key-a`` is owner alice, ``key-b`` is owner bob."""
    return make_server(keys=ApiKeys({"key-a": "alice", "key-b": "bob"}))


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def idle_http(idle_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle_server.url, timeout=30) as client:
        yield client


# -- Server-Sent Events on the wire ----------------------------------------------------
@dataclass
class SSE:
    """One message as parsed from raw lines: fields, or a comment (a heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comment: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        assert self.data is not None
        value: dict[str, Any] = json.loads(self.data)
        return value


def iter_sse(response: httpx.Response) -> Iterator[SSE]:
    """Parse a text/event-stream from raw lines (independently of httpx-sse): one SSE per
    dispatched event, and one per comment line."""
    current = SSE()
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield SSE(comment=line[1:].strip())
            continue
        if line == "":
            if data or current.id is not None or current.event or current.retry is not None:
                current.data = "\n".join(data) if data else None
                yield current
            current, data = SSE(), []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "retry":
            current.retry = int(value)


def event_log(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's whole event log, from the JSON page endpoint."""
    response = http.get(f"/api/jobs/{job_id}/events", params={"format": "json"})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The JSON error body, after checking its status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def seed_jobs(db: Path, stamps: Sequence[float], owner: str = "local") -> list[str]:
    """Queued ``add`` jobs with the given created_at times, written to the SQLite file
    ``db`` before a server opens it (a server stamps jobs with the clock, and jobs that
    share an instant are what paging must not skip or repeat). Ids newest first."""
    async def seed() -> list[Job]:
        store = SQLiteStore(db)
        await store.open()
        try:
            return [(await store.create_job(Job(
                id=new_job_id(), function="add", input={"x": i}, owner=owner,
                created_at=stamp), SubmitPolicy())).job for i, stamp in enumerate(stamps)]
        finally:
            await store.close()

    jobs = anyio.run(seed)
    return [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]


def submit(http: httpx.Client, function: str, status: int = 201, headers: dict[str, str]
           | None = None, **inputs: Any) -> dict[str, Any]:
    response = http.post("/api/jobs", json={"function": function, "input": inputs},
                         headers=headers)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """Long-poll the result until the job is terminal."""
    def poll() -> dict[str, Any] | None:
        response = http.get(f"/api/jobs/{job_id}/result", params={"wait": 10},
                            headers=headers)
        assert response.status_code in (200, 202), response.text
        return response.json() if response.status_code == 200 else None

    job: dict[str, Any] = wait_until(poll, 60, what=f"job {job_id} to finish")
    return job


# -- a TCP proxy that drops connections ------------------------------------------------
class ChaosProxy:
    """Loopback TCP proxy to ``upstream_port`` that cuts connections.

    Given several ports it is also a round-robin load balancer: each connection goes to
    the next upstream that accepts it, so a dead front end is skipped, as a real load
    balancer's health checks would.

    ``drop_responses_first``: the first N connections are cut as soon as the server starts
    answering (the request was received and processed; the response is lost).
    ``budget``: (low, high) — after that, each connection is cut once a random number of
    response bytes in that range has been forwarded (None: never). A cut is a FIN or,
    half the time, a reset. ``drops`` counts the connections cut.
    """

    def __init__(self, upstream_port: int | Sequence[int], *,
                 budget: tuple[int, int] | None = None,
                 drop_responses_first: int = 0, seed: int = 7) -> None:
        self.upstream_ports = ([upstream_port] if isinstance(upstream_port, int)
                               else list(upstream_port))
        self._turn = 0
        self.budget = budget
        self.drop_responses_first = drop_responses_first
        self.random = random.Random(seed)
        self.connections = 0
        self.drops = 0
        self._lock = threading.Lock()
        self._listener = _listening_socket()
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="chaos-proxy",
                                          daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stopping.set()
        self._acceptor.join(10)
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = self._connect_upstream()
            if upstream is None:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                if self.connections <= self.drop_responses_first:
                    budget: int | None = 0
                elif self.budget is not None:
                    budget = self.random.randint(*self.budget)
                else:
                    budget = None
                reset = self.random.random() < 0.5
                self._open |= {client, upstream}
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, None, pair, reset),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, budget, pair, reset),
                             daemon=True).start()

    def _connect_upstream(self) -> socket.socket | None:
        ports = self.upstream_ports
        self._turn += 1
        for i in range(len(ports)):
            try:
                return socket.create_connection(
                    ("127.0.0.1", ports[(self._turn + i) % len(ports)]), 5)
            except OSError:
                continue
        return None

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None,
              pair: tuple[socket.socket, socket.socket], reset: bool) -> None:
        cut = False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None and len(data) >= budget:
                    if budget:
                        sink.sendall(data[:budget])
                    cut = True
                    with self._lock:
                        self.drops += 1
                    break
                if budget is not None:
                    budget -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                for sock in pair:
                    self._open.discard(sock)
            for sock in pair:
                _close(sock, reset=cut and reset)


def _close(sock: socket.socket, reset: bool = False) -> None:
    """Close, waking any thread blocked in recv on it; ``reset`` sends RST, not FIN."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)  # wakes a blocked recv without sending a FIN
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- the genq command in a subprocess ----------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    """Environment for ``genq`` subprocesses: this checkout's genq and the test apps
    importable (this checkout's ``src`` first, so a second work tree tests its own code,
    not the one the virtualenv was installed from), wide plain output, and none of the
    caller's GENQ_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(TESTS_DIR)]),
               COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env
