"""What a slow or greedy client may hold: deadlines for a request's head and body, and
a cap on the connections one client address keeps open.

uvicorn (httptools) times out only an idle keep-alive connection after a response
(``timeout_keep_alive``): a connection that sends half a request line, headers a byte
at a time, or a body a byte a minute is held forever, and a few hundred of them
(slowloris) use up the process's file descriptors, after which nobody is served. Its
``limit_concurrency`` answers 503 past a total, to everyone alike, and
``h11_max_incomplete_event_size`` bounds a head's size, not its time. So genq adds:

- ``header_timeout`` (``GuardedProtocol``): from a connection's start, or the end of its
  previous response, to the end of the next request's headers. A client that sent part
  of a request gets 408 ``request_timeout`` and is closed; one that sent nothing is
  closed quietly, as an idle keep-alive connection is.
- ``body_timeout`` (``BodyDeadline``, ASGI middleware, so the answer is the app's own
  JSON error): from the end of the headers to the end of the body, while the app reads
  it; then 408 ``request_timeout`` and the connection is closed. A body the app does not
  read counts against the next ``header_timeout`` instead.
- ``max_per_client`` (``GuardedProtocol``): open connections per client address (IPv6
  per /64 network, which one host usually holds). A connection past it gets 429
  ``too_many_connections`` and is closed; other addresses are still served. Event
  streams are long-lived connections that count too: a browser holds at most 6 per
  origin over HTTP/1.1 and genq's client pools at most 200, so the default leaves room
  for both. Behind a reverse proxy every connection comes from the proxy's address:
  raise the cap there or set 0 (none) and let the proxy limit its clients.

Long-running answers (event streams, long polls) are not bounded: the deadlines cover
only what the client sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from genq.errors import GenqError, RequestTimeout, TooManyConnections, TryLater
from genq.jsoncodec import compact_json
from genq.server.security import DEFAULT_HEADERS


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds to send a request's line and headers
    body_timeout: float = 60.0  # seconds to send its body (1 MiB at ~17 KB/s)
    max_per_client: int = 256  # open connections per client address; 0: no cap


def client_key(client: tuple[str, int] | None) -> str | None:
    """The address a connection counts against: IPv4 as is, IPv6 by its /64 network;
    None without one (a Unix socket)."""
    if client is None:
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientConnections:
    """Open connections per client address, refused past ``cap`` (0: never)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: Counter[str] = Counter()

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        if self.cap and self.open[key] >= self.cap:
            return False
        self.open[key] += 1
        return True

    def release(self, key: str | None) -> None:
        if key is None:
            return
        self.open[key] -= 1
        if not self.open[key]:
            del self.open[key]


def error_response(error: GenqError) -> bytes:
    """A whole HTTP/1.1 answer carrying ``error`` as genq's JSON, closing the connection:
    what the protocol writes itself, before or outside any request the app sees."""
    body = compact_json({"error": error.to_dict()}).encode()
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
            "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if isinstance(error, TryLater):
        head.append(f"retry-after: {error.retry_after}")
    head += [f"{name.decode()}: {value.decode()}" for name, value in DEFAULT_HEADERS]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


class GuardedConfig(uvicorn.Config):
    """uvicorn's settings, serving with ``GuardedProtocol`` under ``limits``."""

    def __init__(self, app: ASGIApp, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, http=GuardedProtocol, **options)
        self.limits = limits
        self.clients = ClientConnections(limits.max_per_client)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head deadline and the per-address cap."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, GuardedConfig)
        self.limits = config.limits
        self.clients = config.clients
        self.admitted = False
        self.head_deadline: asyncio.TimerHandle | None = None
        self.head_started = False  # bytes of a request arrived since the deadline was set

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.clients.admit(client_key(self.client)):
            cap = self.limits.max_per_client
            self.refuse(TooManyConnections(
                f"this address already holds {cap} connections to the server, the most "
                "one address may; close some (or raise --max-connections-per-client)",
                limit=cap, retry_after=1))
            return
        self.admitted = True
        self.await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_head_deadline()
        if self.admitted:
            self.admitted = False
            self.clients.release(client_key(self.client))
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is not None:
            self.head_started = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.stop_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The deadline restarts once every request read so far is answered (not while a
        # pipelined one runs).
        if not self.transport.is_closing() and self.cycle.response_complete:
            self.await_head()

    def await_head(self) -> None:
        self.stop_head_deadline()
        self.head_started = False
        self.head_deadline = self.loop.call_later(self.limits.header_timeout,
                                                  self.head_timed_out)

    def stop_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def head_timed_out(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if not self.head_started:
            self.transport.close()  # idle, as uvicorn closes an idle keep-alive connection
            return
        self.refuse(RequestTimeout(
            f"the request was not complete within {self.limits.header_timeout:g} s "
            "(--header-timeout)", timeout=self.limits.header_timeout))

    def refuse(self, error: GenqError) -> None:
        self.transport.write(error_response(error))
        self.transport.close()


class BodyDeadline:
    """ASGI middleware: the app's reads of a request body fail with ``RequestTimeout``
    once ``timeout`` seconds have passed since the request reached the app (the end of
    its headers), and that answer closes the connection."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout
        body_read = False
        timed_out = False

        async def receive_in_time() -> Message:
            nonlocal body_read, timed_out
            if body_read:  # later reads wait for a disconnect: not bounded
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise RequestTimeout(
                    f"the request body was not complete within {self.timeout:g} s "
                    "(--body-timeout)", timeout=self.timeout) from None
            body_read = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_closing(message: Message) -> None:
            if timed_out and message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive_in_time, send_closing)
