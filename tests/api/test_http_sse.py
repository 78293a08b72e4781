"""Server-Sent Events on the wire: ids, resume after a disconnect, heartbeats, the end.

Read as raw lines with httpx (not through genq's client), so these tests pin down the
protocol a browser's EventSource or any other client relies on.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from tests.support.http_fixtures import SSE, event_log, finished, iter_sse, submit, wait_until


def data_events(messages: list[SSE]) -> list[SSE]:
    return [m for m in messages if m.comment is None and m.data is not None]


def as_log(messages: list[SSE]) -> list[tuple[int, str, Any]]:
    """(id, type, data) of SSE data messages, checking id/event/payload agree."""
    out = []
    for m in data_events(messages):
        assert m.id is not None
        payload = m.payload
        assert m.event == payload["type"]
        out.append((int(m.id), payload["type"], payload["data"]))
    return out


def log_of(http: httpx.Client, job_id: str) -> list[tuple[int, str, Any]]:
    return [(e["id"], e["type"], e["data"]) for e in event_log(http, job_id)]


def test_sse_id_is_the_log_id_and_the_stream_ends_after_the_terminal_event(
        http: httpx.Client) -> None:
    job = submit(http, "tokens", n=20, delay=0.01)
    with http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        messages = list(iter_sse(response))  # returns only because the server ends it
    assert messages[0].comment == "genq"
    assert messages[1].retry == 50  # the reconnect hint: ServerSettings.retry_ms
    seen = as_log(messages)
    assert seen == log_of(http, job["id"])
    assert [i for i, _, _ in seen] == list(range(1, len(seen) + 1))
    types = [t for _, t, _ in seen]
    assert types[0] == "queued" and "started" in types and types[-1] == "succeeded"
    assert [d["chunk"] for _, t, d in seen if t == "output"] == [f"t{i} " for i in range(20)]
    assert data_events(messages)[-1] is messages[-1]  # nothing after the terminal event

    # A finished job's stream replays its log and ends at once.
    with http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        assert as_log(list(iter_sse(response))) == seen


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnect_replays_exactly_the_missed_events_then_follows_live(
        http: httpx.Client, how: str) -> None:
    job = submit(http, "tokens", n=40, delay=0.05)
    path = f"/api/jobs/{job['id']}/events"
    first: list[tuple[int, str, Any]] = []
    with http.stream("GET", path) as response:
        for message in iter_sse(response):
            first += as_log([message])
            if len([1 for _, t, _ in first if t == "output"]) == 5:
                break  # the client goes away mid-job
    last_id = first[-1][0]
    assert http.get(f"/api/jobs/{job['id']}").json()["status"] == "running"

    if how == "header":
        request: dict[str, Any] = {"headers": {"Last-Event-ID": str(last_id)}}
    else:
        request = {"params": {"last_event_id": last_id}}
    with http.stream("GET", path, **request) as response:
        second = as_log(list(iter_sse(response)))

    assert second[0][0] == last_id + 1  # nothing it already had, nothing missed
    assert first + second == log_of(http, job["id"])
    assert second[-1][1] == "succeeded"
    # Followed live: the reconnect saw events written after it was made.
    assert [d["chunk"] for _, t, d in first + second if t == "output"] == [
        f"t{i} " for i in range(40)]


def test_resume_from_the_last_event_gets_nothing_more(http: httpx.Client) -> None:
    job = submit(http, "add", x=1)
    finished(http, job["id"])
    log = log_of(http, job["id"])
    with http.stream("GET", f"/api/jobs/{job['id']}/events",
                     headers={"Last-Event-ID": str(log[-1][0])}) as response:
        assert as_log(list(iter_sse(response))) == []
    with http.stream("GET", f"/api/jobs/{job['id']}/events",
                     headers={"Last-Event-ID": "x"}) as response:
        assert response.status_code == 400
        response.read()
        assert response.json()["error"]["code"] == "bad_request"


def test_idle_stream_sends_heartbeat_comments(idle_http: httpx.Client) -> None:
    job = submit(idle_http, "add", x=1)  # stays queued: no events after "queued"
    pings: list[SSE] = []
    messages: list[SSE] = []
    with idle_http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        for message in iter_sse(response):
            messages.append(message)
            if message.comment is not None and message.comment.startswith("ping"):
                pings.append(message)
                if len(pings) == 4:
                    break
    assert [t for _, t, _ in as_log(messages)] == ["queued"]  # idle after its one event
    # Heartbeats are paced by the configured interval (0.2 s), not sent in a burst.
    gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]
    assert min(gaps) > 0.1
    idle_http.post(f"/api/jobs/{job['id']}/cancel")


def test_cancelled_job_stream_ends_with_cancelled(idle_http: httpx.Client) -> None:
    job = submit(idle_http, "add", x=1)
    path = f"/api/jobs/{job['id']}/events"
    with idle_http.stream("GET", path) as response:
        messages = iter_sse(response)
        wait_until(lambda: next(messages).event == "queued", what="queued")
        idle_http.post(f"/api/jobs/{job['id']}/cancel")
        rest = as_log(list(messages))
    assert [t for _, t, _ in rest] == ["cancelled"]


def test_events_json_page(http: httpx.Client) -> None:
    job = submit(http, "tokens", n=10)
    finished(http, job["id"])
    full = event_log(http, job["id"])
    page = http.get(f"/api/jobs/{job['id']}/events",
                    params={"format": "json", "after": 3, "limit": 4}).json()["events"]
    assert page == full[3:7]
    assert all(e["job_id"] == job["id"] for e in page)
