"""Answers the client cannot read raise ``genq.ProtocolError``; event types it does not
know pass through (docs/api.md, "Errors" and "Event streams").

A small Starlette app on a real uvicorn server (a loopback port) plays a broken or a
newer server: a 200 that is not JSON, JSON of the wrong shape, an event stream with a
non-numeric id or a body that is not JSON, a 200 that is not an event stream, and a
stream with an event type (``thinking``) that this genq does not know. The clients
raise ``ProtocolError`` naming the URL, never a bare ``JSONDecodeError``,
``ValueError`` or ``KeyError``; the unknown event comes through as an ``Event`` whose
type is the plain string, and the job's outputs and end are read as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import genq
from tests.support.live_server import serve_asgi

SSE = "text/event-stream"
NOT_READ = (json.JSONDecodeError, KeyError)  # what a protocol error must not look like


def sse(*messages: tuple[str, str, Any]) -> str:
    """SSE text: one message per (id, type, data)."""
    return "".join(f"id: {id_}\nevent: {kind}\ndata: "
                   f"{json.dumps({'type': kind, 'data': data, 'ts': 1.0})}\n\n"
                   for id_, kind, data in messages)


NEWER = sse(("1", "started", {"attempt": 1, "max_attempts": 1, "worker": "w"}),
            ("2", "thinking", {"thought": "the user wants a greeting"}),
            ("3", "output", {"chunk": "hello"}),
            ("4", "succeeded", {"result": "hello"}))
STREAMS = {
    "thinking": NEWER,
    "bad-id": sse(("seven", "output", {"chunk": "x"})),
    "bad-data": "id: 1\nevent: output\ndata: {not json\n\n",
    "bad-shape": "id: 1\nevent: output\ndata: [1, 2]\n\n",
}


async def job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    if job_id == "not-json":
        return PlainTextResponse("<html>Sign in to the hotel Wi-Fi</html>",
                                 media_type="text/html")
    if job_id == "wrong-shape":
        return JSONResponse({"jobs": []})
    return JSONResponse({"id": job_id, "function": "greet", "status": "succeeded",
                         "result": "hello"})


async def jobs(request: Request) -> Response:
    return JSONResponse({"jobs": [{"id": 7}], "next": None})


async def events(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    if job_id not in STREAMS:
        return PlainTextResponse("<html>not a stream</html>", media_type="text/html")
    return Response(STREAMS[job_id], media_type=SSE)


BROKEN = Starlette(routes=[
    Route("/api/jobs", jobs),
    Route("/api/jobs/{job_id}", job),
    Route("/api/jobs/{job_id}/events", events),
])


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_asgi(BROKEN) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[genq.Client]:
    # retry_for is short so that a stream the client retried by mistake fails fast.
    with genq.Client(url, retry_for=3) as c:
        yield c


def protocol_error(excinfo: pytest.ExceptionInfo[genq.ProtocolError], url: str,
                   path: str) -> str:
    exc = excinfo.value
    assert not isinstance(exc, NOT_READ)
    assert exc.code == "protocol_error" and exc.status == 500
    assert exc.detail["url"].startswith(f"{url}{path}")
    assert f"{url}{path}" in exc.message
    return exc.message


def test_a_success_that_is_not_json(client: genq.Client, url: str) -> None:
    with pytest.raises(genq.ProtocolError) as excinfo:
        client.get("not-json")
    message = protocol_error(excinfo, url, "/api/jobs/not-json")
    assert "GET" in message and "200" in message and "not JSON" in message
    assert "hotel Wi-Fi" in message  # what came instead


def test_json_of_the_wrong_shape(client: genq.Client, url: str) -> None:
    with pytest.raises(genq.ProtocolError) as excinfo:
        client.get("wrong-shape")
    assert "not a job" in protocol_error(excinfo, url, "/api/jobs/wrong-shape")
    with pytest.raises(genq.ProtocolError) as excinfo:
        client.list_jobs()
    assert "not a page of jobs" in protocol_error(excinfo, url, "/api/jobs")


@pytest.mark.parametrize("job_id, what", [
    ("bad-id", "'seven'"), ("bad-data", "JSONDecodeError"), ("bad-shape", "TypeError"),
])
def test_an_event_stream_that_is_not_genqs(client: genq.Client, url: str, job_id: str,
                                           what: str) -> None:
    with pytest.raises(genq.ProtocolError) as excinfo:
        list(client.job(job_id).events())
    message = protocol_error(excinfo, url, f"/api/jobs/{job_id}/events")
    assert "an event that is not genq's" in message and what in message


def test_a_success_that_is_not_an_event_stream(client: genq.Client, url: str) -> None:
    """Not retried as a dropped connection: the same answer would come again."""
    with pytest.raises(genq.ProtocolError) as excinfo:
        list(client.job("html").events())
    assert "text/html" in protocol_error(excinfo, url, "/api/jobs/html/events")


def test_an_event_type_newer_than_the_client_passes_through(client: genq.Client) -> None:
    seen = list(client.job("thinking").events())
    assert [e.type for e in seen] == ["started", "thinking", "output", "succeeded"]
    thinking = seen[1]
    assert type(thinking.type) is str and not isinstance(thinking.type, genq.EventType)
    assert thinking.data == {"thought": "the user wants a greeting"}
    assert not thinking.terminal and seen[-1].terminal
    assert thinking.to_dict()["type"] == "thinking"
    assert list(client.job("thinking").outputs()) == ["hello"]


def test_the_async_client_alike(url: str) -> None:
    async def main() -> None:
        async with genq.AsyncClient(url, retry_for=3) as client:
            with pytest.raises(genq.ProtocolError):
                await client.get("not-json")
            with pytest.raises(genq.ProtocolError):
                [e async for e in client.job("bad-id").events()]
            assert [c async for c in client.job("thinking").outputs()] == ["hello"]

    anyio.run(main)
