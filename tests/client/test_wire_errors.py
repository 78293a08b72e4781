"""Every error that crosses the wire comes back as itself.

For each class registered in ``genq.errors.WIRE_ERRORS``, a route added to a real genq
server (uvicorn on a loopback port) raises it; the server's error handler answers with
its status and JSON, and both ``genq.AsyncClient`` and ``genq.Client`` raise the same
class with the same message and details. Codes this genq does not know, and answers that
are not genq's JSON, come back as ``RemoteError`` carrying the code and the status.

Errors whose status the clients retry (503: the store is restarting or locked) are
retried for ``retry_for`` seconds, then raise ``ConnectionLost``, as docs/api.md says;
the server's own error is its ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import genq
from genq import errors
from tests.support.http_fixtures import LiveServer, ServerFactory

RETRIED = {502, 503, 504}
DETAIL = {"field": "x", "n": 1}
UNKNOWN = {"code": "teapot_overflow", "message": "short and stout", "spout": 1}


def detail_of(cls: type[errors.GenqError]) -> dict[str, Any]:
    """The details the route raises ``cls`` with (a 429 also carries retry_after, which
    the server sends as the Retry-After header too)."""
    return {**DETAIL, "retry_after": 7} if issubclass(cls, errors.TryLater) else dict(DETAIL)


async def raise_registered(request: Request) -> Response:
    cls = errors.WIRE_ERRORS[request.path_params["code"]]
    raise cls(f"{cls.__name__} raised by the test route", **detail_of(cls))


async def answer_unknown(request: Request) -> Response:
    return JSONResponse({"error": UNKNOWN}, 418)


async def answer_html(request: Request) -> Response:
    return PlainTextResponse("<h1>bad gateway keeper</h1>", 418)


@pytest.fixture
def raising_server(make_server: ServerFactory) -> LiveServer:
    """A genq server whose /api/jobs/raise-<code> routes raise the error of that code,
    ahead of its own routes (GET /api/jobs/{id} is what ``client.get`` asks)."""
    live = make_server(workers=False)
    assert live.asgi is not None
    live.asgi.router.routes[:0] = [
        Route("/api/jobs/raise-unknown", answer_unknown),
        Route("/api/jobs/raise-html", answer_html),
        Route("/api/jobs/raise-{code}", raise_registered),
        Route("/api/jobs/raise-{code}/events", raise_registered),
    ]
    return live


def test_every_error_class_with_a_code_is_registered() -> None:
    """The registry is filled by the classes themselves; nothing with a code is missing."""
    def subclasses(cls: type[errors.GenqError]) -> list[type[errors.GenqError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    with_code = {c for c in subclasses(errors.GenqError) if "code" in c.__dict__}
    assert set(errors.WIRE_ERRORS.values()) == with_code
    assert {c.__module__ for c in with_code} == {"genq.errors"}
    for code, cls in errors.WIRE_ERRORS.items():
        assert cls.code == code and 400 <= cls.status < 600, cls
    # The server's, the auth layer's, the Redis store's and the client's own are here.
    for name in ("BadRequest", "PayloadTooLarge", "Unauthorized", "Forbidden",
                 "ArtifactTooLarge", "ConnectionLost", "StoreUnavailable"):
        assert getattr(genq, name) in with_code, name
    with pytest.raises(TypeError, match="already"):
        type("Duplicate", (errors.GenqError,), {"code": "job_not_found"})


def check(raised: BaseException, cls: type[errors.GenqError]) -> None:
    """``raised`` is ``cls`` as the route raised it, or, for a status the clients retry,
    ConnectionLost caused by it."""
    if cls.status in RETRIED:
        assert type(raised) is errors.ConnectionLost, raised
        assert raised.__cause__ is not None
        raised = raised.__cause__
    assert type(raised) is cls, raised
    assert isinstance(raised, errors.GenqError)
    assert raised.message == f"{cls.__name__} raised by the test route"
    assert raised.detail == detail_of(cls)
    assert (raised.code, raised.status) == (cls.code, cls.status)


@pytest.mark.anyio
async def test_async_client_gets_every_registered_error_back(
        raising_server: LiveServer) -> None:
    assert errors.WIRE_ERRORS
    async with genq.AsyncClient(raising_server.url, retry_for=0.5) as client:
        for code, cls in errors.WIRE_ERRORS.items():
            with pytest.raises(errors.GenqError) as caught:
                await client.get(f"raise-{code}")
            check(caught.value, cls)


def test_sync_client_gets_every_registered_error_back(raising_server: LiveServer) -> None:
    with genq.Client(raising_server.url, retry_for=0.5) as client:
        for code, cls in errors.WIRE_ERRORS.items():
            with pytest.raises(errors.GenqError) as caught:
                client.get(f"raise-{code}")
            check(caught.value, cls)


def test_an_event_stream_refused_with_an_error_raises_it(raising_server: LiveServer) -> None:
    """The SSE path decodes through the same registry. (A rate limit is waited out there
    for its Retry-After, 7 s here, before ConnectionLost: left out to keep this short.)"""
    refused = {code: cls for code, cls in errors.WIRE_ERRORS.items()
               if cls is not errors.RateLimited}
    with genq.Client(raising_server.url, retry_for=0.5) as client:
        for code, cls in refused.items():
            with pytest.raises(errors.GenqError) as caught:
                list(client.job(f"raise-{code}").events())
            check(caught.value, cls)


@pytest.mark.anyio
async def test_unknown_codes_and_foreign_answers_are_remote_errors(
        raising_server: LiveServer) -> None:
    def expect_unknown(err: BaseException) -> None:
        assert type(err) is errors.RemoteError
        assert (err.code, err.status, err.message) == ("teapot_overflow", 418,
                                                       "short and stout")
        assert err.detail == {"spout": 1}

    def expect_html(err: BaseException) -> None:
        assert type(err) is errors.RemoteError
        assert (err.code, err.status) == ("error", 418)
        assert "bad gateway keeper" in err.message

    checks: list[tuple[str, Callable[[BaseException], None]]] = [
        ("raise-unknown", expect_unknown), ("raise-html", expect_html)]
    async with genq.AsyncClient(raising_server.url, retry_for=0.5) as aio:
        for path, expect in checks:
            with pytest.raises(errors.RemoteError) as caught:
                await aio.get(path)
            expect(caught.value)
    with genq.Client(raising_server.url, retry_for=0.5) as client:
        for path, expect in checks:
            with pytest.raises(errors.RemoteError) as caught_sync:
                client.get(path)
            expect(caught_sync.value)
