"""Slow and greedy clients (slowloris) against a real server, with raw sockets on
loopback: a request's head and body must arrive within their deadlines, and one client
address may hold only so many connections while other addresses are still served.
Every loop here is bounded in count and time. docs/api.md, "Slow clients"."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from genq.server.connections import ConnectionLimits
from tests.support.http_fixtures import (
    LiveServer,
    ServerFactory,
    error_of,
    finished,
    iter_sse,
    submit,
    wait_until,
)

QUICK = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, max_per_client=4)
PATIENCE = 15.0  # seconds a test waits for the server to act, far past every deadline
ATTACKER, NEIGHBOUR = "127.0.0.1", "127.0.0.2"  # two client addresses on loopback


def connect(live: LiveServer, source: str = ATTACKER) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=PATIENCE,
                                    source_address=(source, 0))
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it, after
    what it sent); fails if it is still open after PATIENCE seconds."""
    sock.settimeout(PATIENCE)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def trickle(sock: socket.socket, data: bytes, every: float = 0.2) -> bytes:
    """Send ``data`` a byte every ``every`` s for as long as the server keeps the
    connection; then what it answered (nothing if its reset overtook the answer). Fails
    if all of ``data`` went through."""
    sock.settimeout(every)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset, or a pipe the server closed
            return until_closed(sock)
        return answer + until_closed(sock)
    raise AssertionError(f"the server took {len(data)} bytes over {len(data) * every:.0f} s")


def cut_off(answer: bytes, option: str) -> None:
    """A trickling client was cut off: with 408 ``request_timeout`` naming the option, or
    (when the reset of the closed connection overtook that answer) with nothing."""
    if answer:
        assert option in error_answer(answer, 408, "request_timeout")["message"]


def error_answer(raw: bytes, status: int, code: str) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"content-type: application/json" in head.lower()
    assert b"x-content-type-options: nosniff" in head.lower()
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == code, error
    return error


def jobs(live: LiveServer) -> list[dict[str, Any]]:
    with httpx.Client(base_url=live.url, timeout=10) as http:
        found: list[dict[str, Any]] = http.get("/api/jobs").json()["jobs"]
        return found


@pytest.fixture
def quick(make_server: ServerFactory) -> LiveServer:
    return make_server(limits=QUICK)


def test_a_half_sent_request_is_cut_off_after_the_header_timeout(quick: LiveServer) -> None:
    with connect(quick) as sock:
        sock.sendall(b"GET /api/jo")
        error = error_answer(until_closed(sock), 408, "request_timeout")
        assert "--header-timeout" in error["message"]
    # Headers that keep coming, a byte at a time, never finish in time either.
    with connect(quick) as sock:
        cut_off(trickle(sock, b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              + b"X-Pad: 1\r\n" * 20), "--header-timeout")
    # A connection that sends nothing is closed as an idle one: no answer.
    with connect(quick) as sock:
        assert until_closed(sock) == b""


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(
        quick: LiveServer) -> None:
    with connect(quick) as sock:
        sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 12")
        error_answer(until_closed(sock), 408, "request_timeout")


def test_a_trickled_body_is_cut_off_after_the_body_timeout(quick: LiveServer) -> None:
    body = json.dumps({"function": "add", "input": {"x": 1, "y": 2}}).encode()
    head = (b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with connect(quick) as sock:
        sock.sendall(head + body[:10])
        cut_off(trickle(sock, body[10:]), "--body-timeout")
    assert jobs(quick) == []
    # The same body sent at once is a job.
    with connect(quick) as sock:
        sock.sendall(head + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201 ")
    assert len(jobs(quick)) == 1


def test_a_body_the_server_does_not_read_counts_against_the_next_header_timeout(
        quick: LiveServer) -> None:
    """A cancel reads no body: its answer comes at once, and a client that goes on
    trickling the body it announced is cut off by the next request's deadline."""
    with connect(quick) as sock:
        sock.sendall(b"POST /api/jobs/nope/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        assert sock.recv(65536).startswith(b"HTTP/1.1 404 ")
        cut_off(trickle(sock, b" " * 99), "--header-timeout")


@contextlib.contextmanager
def held(live: LiveServer, count: int) -> Iterator[list[socket.socket]]:
    """``count`` slowloris connections from ATTACKER: half a request each, then silence."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(live)) for _ in range(count)]
        for sock in socks:
            sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        yield socks


def test_one_address_holds_at_most_its_share_and_others_are_served(
        make_server: ServerFactory) -> None:
    cap = 4
    live = make_server(limits=ConnectionLimits(header_timeout=60, max_per_client=cap))
    neighbour = httpx.Client(base_url=live.url, timeout=10,
                             transport=httpx.HTTPTransport(local_address=NEIGHBOUR))
    with neighbour, held(live, cap):
        with connect(live) as refused:  # one more from the same address
            error = error_answer(until_closed(refused), 429, "too_many_connections")
            assert error["limit"] == cap and "--max-connections-per-client" in error["message"]
        # Another address gets everything done while the attacker holds its sockets.
        job = submit(neighbour, "add", x=40, y=2)
        assert finished(neighbour, job["id"])["result"] == 42
        with neighbour.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
            assert any(sse.event == "succeeded" for sse in iter_sse(stream))
    # The attacker's sockets are closed: its address is served again.
    with httpx.Client(base_url=live.url, timeout=10) as http:
        def served() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return http.get("/api/jobs").status_code == 200
            return False

        wait_until(served, PATIENCE, 0.05, what="the address to be served again")


def test_the_python_client_is_told_why_it_was_refused(make_server: ServerFactory) -> None:
    live = make_server(limits=ConnectionLimits(header_timeout=60, max_per_client=2))
    with held(live, 2), httpx.Client(base_url=live.url, timeout=10) as http:
        error_of(http.get("/api/jobs"), 429, "too_many_connections")


def test_event_streams_outlive_the_deadlines(quick: LiveServer) -> None:
    """An event stream is a long-lived legitimate connection: it is neither a slow head
    nor a slow body, so it stays open past both deadlines (heartbeats every 0.2 s)."""
    with httpx.Client(base_url=quick.url, timeout=10) as http, \
            http.stream("GET", "/api/events") as stream:
        started = time.monotonic()
        for sse in iter_sse(stream):
            if time.monotonic() - started > 3 * QUICK.header_timeout:
                assert (sse.comment or "").startswith("ping")  # still sending heartbeats
                break
        else:
            raise AssertionError("the stream was closed")
