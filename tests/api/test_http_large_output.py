"""Large results and long logs over HTTP: nothing is inlined or sent in one piece.

A result over 1 MiB is not in the job view (``result`` null, ``result_size``,
``result_url``); ``GET /api/jobs/{id}/result/value`` serves it whole, and the clients'
``result()`` fetch it there. Replays of a log read it in pages bounded by bytes as well
as by count, and every event still comes once, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import genq
from tests.support.http_fixtures import (
    LiveServer,
    ServerFactory,
    error_of,
    finished,
    iter_sse,
    submit,
)

MIB = 1 << 20
app = genq.App("large-output-tests")


def text_of(size: int, tag: int) -> str:
    stamp = f"<{tag}>"
    return stamp + "x" * (size - len(stamp))


@app.function()
def big_text(mb: int = 20) -> str:
    return "".join(text_of(MIB, i) for i in range(mb))


@app.function()
def big_stream(mb: int = 20) -> Iterator[str]:
    for i in range(mb):
        yield text_of(MIB, i)


@app.function()
def mixed(tokens: int = 2500, big: int = 8) -> Iterator[str]:
    """Many small chunks (past a page's count) and some large ones (past its bytes)."""
    for i in range(tokens):
        yield f"t{i} "
        if i % (tokens // big) == 0:
            yield text_of(400 << 10, i)


@app.function()
def broken() -> str:
    raise ValueError("no result here")


@pytest.fixture
def large_server(make_server: ServerFactory) -> LiveServer:
    return make_server(app=app)


@pytest.mark.parametrize("function", ["big_text", "big_stream"])
def test_a_large_result_comes_back_whole_and_the_job_view_stays_small(
        large_server: LiveServer, function: str) -> None:
    expected = "".join(text_of(MIB, i) for i in range(20))
    with genq.Client(large_server.url) as client:
        job = client.submit(function, mb=20)
        assert job.result(timeout=120) == expected
        assert client.get(job.id).result_size is not None
    with httpx.Client(base_url=large_server.url, timeout=60) as http:
        view = http.get(f"/api/jobs/{job.id}")
        assert view.status_code == 200 and len(view.content) < 2000
        body = view.json()
        assert body["result"] is None and body["result_size"] >= 20 * MIB
        assert body["result_url"] == f"/api/jobs/{job.id}/result/value"
        value = http.get(body["result_url"])
        assert value.status_code == 200
        assert value.headers["content-type"] == "application/json"
        assert value.json() == expected
        with http.stream("GET", f"/api/jobs/{job.id}/events") as stream:
            last = [sse for sse in iter_sse(stream) if sse.event][-1]
        assert last.event == "succeeded" and len(last.data or "") < 200


def test_a_result_that_is_not_there_is_a_409(large_server: LiveServer) -> None:
    with httpx.Client(base_url=large_server.url, timeout=60) as http:
        failed = finished(http, submit(http, "broken")["id"])
        error = error_of(http.get(f"/api/jobs/{failed['id']}/result/value"), 409, "no_result")
        assert "failed" in error["message"]
        error_of(http.get("/api/jobs/nope/result/value"), 404, "job_not_found")


def replay(http: httpx.Client, job_id: str, after: int = 0) -> list[tuple[int, str, Any]]:
    headers = {"Last-Event-ID": str(after)} if after else {}
    with http.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response:
        return [(int(sse.id), sse.event or "", sse.payload["data"])
                for sse in iter_sse(response) if sse.id is not None]


def test_a_replay_larger_than_a_page_gives_every_event_once_in_order(
        large_server: LiveServer) -> None:
    with httpx.Client(base_url=large_server.url, timeout=60) as http:
        job = finished(http, submit(http, "mixed", tokens=2500, big=8)["id"])
        events = replay(http, job["id"])
        ids = [i for i, _, _ in events]
        assert ids == list(range(1, job["last_event_id"] + 1))
        outputs = [data["chunk"] for _, kind, data in events if kind == "output"]
        assert len(outputs) == 2500 + 9 and sum(map(len, outputs)) > 3 * MIB
        assert events[-1][1] == "succeeded"
        # Resumed part way, past the first pages: exactly the rest.
        assert replay(http, job["id"], after=1700) == events[1700:]
        # A JSON page holds about a MiB of data, whatever its limit; paging covers all.
        pages, after = [], 0
        while True:
            page = http.get(f"/api/jobs/{job['id']}/events",
                            params={"format": "json", "after": after, "limit": 10_000})
            got = page.json()["events"]
            if not got:
                break
            assert len(page.content) < 2 * MIB
            pages.append(got)
            after = got[-1]["id"]
        assert len(pages) > 2
        assert [e["id"] for page in pages for e in page] == ids
