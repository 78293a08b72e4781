"""A job that starts over: what ``stream()`` and ``job.outputs()`` give (docs/api.md,
"Streams and retries").

The job of ``tests/apps/retry_app.py`` yields 39 chunks on its first run, which is
lost (a retried ``ConnectionError``, or a server restart that puts it back in the
queue), then 100 on the next. Its log holds all 139 chunks; a stream gives them live,
with one ``genq.Restart`` between the runs, so a consumer that clears its text there
ends with the 100 chunks exactly, as the web UI shows, and ``run()`` returns them alone.
``"".join(stream)`` never returns the lost run's text glued to the final one: the
marker is not a ``str``, so it raises instead.

In process (``app.local()``, both clients) and against a real server (uvicorn on a
loopback port, ``genq.Client`` and ``genq.AsyncClient``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

import genq
from tests.apps import retry_app
from tests.apps.retry_app import KEPT, LOST, kept_chunks, lost_chunks
from tests.support.http_fixtures import ServerFactory

RETRIED = "ConnectionError: the upstream model dropped the connection"
RETRY = genq.Restart(attempt=2, discarded=LOST, reason=RETRIED)
tag = itertools.count()


def a_tag() -> str:
    return f"run-{next(tag)}"


def final_text(chunks: Iterable[Any]) -> str:
    """What a live consumer shows at the end: it clears its text at each Restart."""
    text = ""
    for chunk in chunks:
        text = "" if isinstance(chunk, genq.Restart) else text + chunk
    return text


def expect_retried(chunks: list[Any]) -> None:
    assert chunks == [*lost_chunks(), RETRY, *kept_chunks()]
    assert final_text(chunks) == "".join(kept_chunks())


def test_restart_marker_reads_as_a_visible_line() -> None:
    assert RETRY.notice == "— attempt 2 restarted, output so far discarded —"
    assert str(RETRY) == f"\n{RETRY.notice}\n"
    assert not isinstance(RETRY, str)


def test_local_sync_client(tmp_path: Path) -> None:
    with retry_app.app.local(tmp_path / "db.sqlite3") as client:
        expect_retried(list(client.stream("flaky_tokens", tag=a_tag())))
        job = client.submit("flaky_tokens", tag=a_tag())
        expect_retried(list(job.outputs()))
        # The log keeps both runs; the result is the final one's text alone.
        events = [e for e in job.events() if e.type is genq.EventType.OUTPUT]
        assert len(events) == LOST + KEPT
        assert job.result(timeout=30) == "".join(kept_chunks())
        assert client.run("flaky_tokens", tag=a_tag(), timeout=30) == "".join(kept_chunks())
        with pytest.raises(TypeError, match="Restart"):
            "".join(client.stream("flaky_tokens", tag=a_tag()))


@pytest.mark.anyio
async def test_local_async_client(tmp_path: Path) -> None:
    async with retry_app.app.local(tmp_path / "db.sqlite3") as client:
        expect_retried([c async for c in client.stream("flaky_tokens", tag=a_tag())])
        job = await client.submit("flaky_tokens", tag=a_tag())
        expect_retried([c async for c in job.outputs()])
        batches = [b async for b in client.job(job.id).output_batches()]
        expect_retried([c for batch in batches for c in batch])


def test_no_marker_when_the_lost_run_had_no_output(tmp_path: Path) -> None:
    """A run that failed before its first chunk replaced nothing: the stream is the
    final run's chunks alone, and ``"".join`` is the final text."""
    with retry_app.app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("flaky_tokens", tag=a_tag(), lost=0)
        assert [e.data["attempt"] for e in job.events()
                if e.type is genq.EventType.STARTED] == [1, 2]
        assert "".join(job.outputs()) == "".join(kept_chunks())


def test_http_clients(make_server: ServerFactory) -> None:
    server = make_server(retry_app.app)
    with genq.Client(server.url) as client:
        expect_retried(list(client.stream("flaky_tokens", tag=a_tag())))
        expect_retried(list(client.submit("flaky_tokens", tag=a_tag()).outputs()))

    async def remote() -> None:
        async with genq.AsyncClient(server.url) as aclient:
            expect_retried([c async for c in aclient.stream("flaky_tokens", tag=a_tag())])
            job = await aclient.submit("flaky_tokens", tag=a_tag())
            expect_retried([c async for c in job.outputs()])

    anyio.run(remote)


def test_server_restart_mid_stream(make_server: ServerFactory) -> None:
    """The issue's case: the server stops while the job runs (the job goes back to the
    queue), starts again and runs it anew. The client's stream resumes across the restart
    and marks where the new run begins; the new run keeps attempt 1 (given back)."""
    server = make_server(retry_app.app)
    with genq.Client(server.url) as client:
        stream = client.stream("stalls_first", tag=a_tag())
        first = list(itertools.islice(stream, LOST))
        assert first == lost_chunks()
        server.restart()
        rest = list(stream)
    restart, *kept = rest
    assert isinstance(restart, genq.Restart)
    assert (restart.attempt, restart.discarded) == (1, LOST)
    assert "shut down" in restart.reason
    assert kept == kept_chunks()
    assert final_text(first + rest) == "".join(kept_chunks())
