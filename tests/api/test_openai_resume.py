"""Background responses resumed from a sequence number with the real ``openai`` SDK:
break the stream after K events, reconnect with ``starting_after`` and get the rest,
the text exactly once and the numbers without gap or repeat: on the same server, after
the server restarted on the same SQLite file (its running job put back in the queue and
run again), and on Redis with the first of two front ends killed with SIGKILL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.apps.openai_app import app, words
from tests.support.cluster_fixtures import Cluster
from tests.support.http_fixtures import LiveServer, ServerFactory
from tests.support.redis_server import RedisServer

PROMPT = "slow: tell me a long story"
COUNT = 60
MESSAGES = [{"role": "user", "content": PROMPT}]


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=30)


def first_events(url: str, count: int) -> tuple[str, list[Any]]:
    """Start a background streaming response and drop the connection after ``count``
    events; its id and the events seen."""
    with sdk(url) as client:
        stream = client.responses.create(model="echo-1", input=PROMPT, background=True,
                                         stream=True, max_output_tokens=COUNT)
        seen = []
        for event in stream:
            seen.append(event)
            if len(seen) == count:
                break
        stream.close()
    return seen[0].response.id, seen


def resumed(url: str, response_id: str, after: int) -> list[Any]:
    with sdk(url) as client:
        return list(client.responses.retrieve(response_id, stream=True,
                                              starting_after=after))


def check_whole(events: list[Any]) -> None:
    """Numbered 0..n-1, the deltas the whole text exactly once, ending completed."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    expected = "".join(words(MESSAGES, COUNT))
    assert text == expected
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == expected


def test_resume_after_a_dropped_connection(make_server: ServerFactory) -> None:
    live = make_server(app)
    response_id, seen = first_events(live.url, 9)
    rest = resumed(live.url, response_id, seen[-1].sequence_number)
    check_whole(seen + rest)
    # Resuming again from anywhere gives the same events: they are the log's, not the
    # connection's.
    again = resumed(live.url, response_id, 4)
    assert [e.model_dump() for e in again] == [e.model_dump() for e in (seen + rest)[5:]]
    with sdk(live.url) as client:
        assert client.responses.retrieve(response_id).output_text == \
            "".join(words(MESSAGES, COUNT))


def test_resume_after_a_server_restart(make_server: ServerFactory) -> None:
    live: LiveServer = make_server(app)
    response_id, seen = first_events(live.url, 12)
    live.restart()  # the running job is put back in the queue and runs again
    rest = resumed(live.url, response_id, seen[-1].sequence_number)
    check_whole(seen + rest)
    job_id = response_id.removeprefix("resp_")
    log = httpx.get(f"{live.url}/api/jobs/{job_id}/events?format=json").json()["events"]
    assert [e["type"] for e in log].count("started") == 2  # it did run twice


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as redis_server:
        cluster = Cluster(redis_server.url, tmp_path / "procs", app="apps.openai_app:app")
        try:
            yield cluster
        finally:
            cluster.close()


def test_resume_on_another_front_end_after_a_kill(cluster: Cluster) -> None:
    first = cluster.front_end("front-1")
    second = cluster.front_end("front-2")
    cluster.worker("worker-1")
    response_id, seen = first_events(first.url, 10)
    first.kill()
    rest = resumed(second.url, response_id, seen[-1].sequence_number)
    check_whole(seen + rest)
