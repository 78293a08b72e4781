"""How the ``genq`` job commands reach a server: the client they use, a visible note
while its connection is down, and one line for a server that is not genq.

A server that does not answer at all when a command starts is reported after
``FIRST_CONTACT`` (10) s: a wrong address should not keep anyone waiting. Once it has
answered, the commands use the Python client's resume window (``retry_for``, 120 s), so
``genq run`` and ``genq watch`` ride out a server restart (a graceful stop alone takes
longer than 10 s) and carry on from the last event they printed: the client resumes the
event stream with ``Last-Event-ID``. The client retries silently; ``WatchedTransport``,
the httpx transport under it, sees each failed attempt and says ``reconnecting…`` once
per outage on stderr, then ``reconnected``.

It also remembers the last answer that was not genq's (neither JSON nor an event
stream), so that an address that points at some other web server is reported as one
line naming the status and content type, not a dumped HTML page.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from genq import errors
from genq.client import Client, HttpTransport

# What genq's answers are made of; anything else came from another program.
_GENQ_CONTENT_TYPES = ("application/json", "text/event-stream")
_UNAVAILABLE = {502, 503, 504}
FIRST_CONTACT = 10.0  # seconds a server that never answered is retried
# The Python client's own window (client/http.py), whatever it becomes.
RESUME_WINDOW: float = inspect.signature(HttpTransport).parameters["retry_for"].default


@dataclass(frozen=True)
class ForeignAnswer:
    status: int
    content_type: str


class WatchedTransport(httpx.AsyncBaseTransport):
    """httpx's transport, noting outages (``say``) and answers that are not genq's."""

    def __init__(self, say: Callable[[str], None],
                 answered: Callable[[], None] = lambda: None) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._say = say
        self._answered = answered  # called at the server's first answer
        self.reached = False
        self._down = False
        self.foreign: ForeignAnswer | None = None  # the last answer not of genq's types
        self.refused: ForeignAnswer | None = None  # the last JSON error answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._lost(type(exc).__name__)
            raise
        if response.status_code in _UNAVAILABLE:
            self._lost(f"HTTP {response.status_code}")
        else:
            if not self.reached:
                self.reached = True
                self._answered()
            if self._down:
                self._down = False
                self._say("reconnected")
            content_type = response.headers.get("content-type", "").split(";")[0].strip()
            answer = ForeignAnswer(response.status_code, content_type or "no type")
            artifact = "/api/artifacts/" in request.url.path  # served as its own type
            if content_type not in _GENQ_CONTENT_TYPES and (
                    response.status_code >= 400 or not artifact):
                self.foreign = answer
            elif response.status_code >= 400:
                self.refused = answer  # genq's error, or JSON of another program
        return response

    def _lost(self, why: str) -> None:
        if not self._down:
            self._down = True
            self._say(f"connection lost ({why}); reconnecting…" if self.reached else
                      f"no answer ({why}); trying for {FIRST_CONTACT:.0f} s…")

    async def aclose(self) -> None:
        await self._inner.aclose()


class ServerClient(Client):
    """``genq.Client`` for the CLI: its transport watched (``WatchedTransport``)."""

    def __init__(self, server: str, api_key: str | None, say: Callable[[str], None]) -> None:
        self.server = server.rstrip("/")
        self.watched = WatchedTransport(say, self._answered)
        super().__init__(server, api_key=api_key, transport=self.watched,
                         retry_for=FIRST_CONTACT)

    def _answered(self) -> None:
        """The server is there: from now on, outages are ridden out for minutes."""
        if isinstance(self.transport, HttpTransport):
            self.transport.retry_for = RESUME_WINDOW

    def __enter__(self) -> ServerClient:
        return self

    def not_genq(self, exc: errors.GenqError) -> str | None:
        """One line for an error caused by an answer that was not genq's, else None:
        a page (HTML, text), or an error in JSON without genq's ``error`` object (another
        web API), which the client raises as a RemoteError without a code."""
        answer = self.watched.foreign
        if isinstance(exc, errors.RemoteError) and exc.code == errors.GenqError.code:
            answer = answer or self.watched.refused
        elif not isinstance(exc, errors.RemoteError | errors.ProtocolError):
            return None
        if answer is None:
            return None
        return (f"{self.server} answered {answer.status} with {answer.content_type}: "
                "not a genq server? (check --server)")
