"""Property tests of the event log: whatever the interleaving of appends, page reads,
cut connections, resumes and the job's end, every reader sees every event exactly once,
in order, with contiguous ids, and nothing after the terminal event.

Hypothesis generates the scenarios. The stores are real: SQLite on a file, Redis on a
private redis-server (one per module, flushed between examples); the HTTP property runs
against a live uvicorn server, reading its SSE stream as raw lines and resuming with
``Last-Event-ID`` (header or query) after each cut.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genq.errors import LeaseLost
from genq.models import Event, EventType, JobStatus
from genq.store.base import NewEvent, Store
from genq.store.redis import RedisStore
from genq.store.sqlite import SQLiteStore
from tests.store.store_contract import OPEN, claim_one, make_job
from tests.support.http_fixtures import FAST, LiveServer, event_log, iter_sse, submit
from tests.support.redis_server import RedisServer

CI = os.environ.get("CI") == "true"
# Examples per property: the module runs in well under a minute on 2 cores.
STORE_EXAMPLES = 50 if CI else 100
HTTP_EXAMPLES = 20 if CI else 40
STEP = 10.0  # seconds any one step may take before the example fails
READERS = 3
TERMINAL = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]

Shape = tuple[int, str, dict[str, Any]]  # (id, type, data) as a reader saw it

# -- scenarios --------------------------------------------------------------------------
# ("append", kinds): one batch of chunks, progress and log lines, appended under the lease
# ("page", reader, limit): the reader reads one page after its last seen event
# ("follow", reader, take): the reader follows from its last seen event, takes ``take``
#   events (cutting mid-batch if need be), then drops the connection
appends = st.tuples(st.just("append"),
                    st.lists(st.sampled_from(["output", "progress", "log"]), min_size=1,
                             max_size=6))
pages = st.tuples(st.just("page"), st.integers(0, READERS - 1), st.integers(1, 4))
follows = st.tuples(st.just("follow"), st.integers(0, READERS - 1), st.integers(1, 8))
steps = st.lists(st.one_of(appends, pages, follows), max_size=20)
reads = st.lists(st.one_of(pages, follows), max_size=6)


@dataclass
class Reader:
    seen: list[Shape] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.seen[-1][0] if self.seen else 0

    def take(self, events: list[Event]) -> None:
        self.seen += [(e.id, e.type.value, e.data) for e in events]
        ids = [i for i, _, _ in self.seen]
        assert ids == list(range(1, len(ids) + 1)), f"not contiguous from 1: {ids}"
        terminal = [n for n, (_, kind, _) in enumerate(self.seen)
                    if EventType(kind).terminal]
        assert terminal in ([], [len(self.seen) - 1]), "an event after the terminal one"


class Scenario:
    """One job on one store, its expected log, and readers at their own positions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.readers = [Reader() for _ in range(READERS)]
        self.counter = itertools.count()

    async def start(self) -> None:
        job = (await self.store.create_job(make_job(), OPEN)).job
        claimed = await claim_one(self.store)
        assert claimed.id == job.id
        self.job_id, self.lease = job.id, claimed.lease
        self.expected: list[tuple[str, dict[str, Any] | None]] = [
            ("queued", {"position": 1}), ("started", None)]
        self.written = 2  # the last id assigned so far
        self.finished = False

    def _event(self, kind: str) -> NewEvent:
        i = next(self.counter)
        data = {"output": {"chunk": f"c{i}"}, "progress": {"fraction": i / 1000},
                "log": {"message": f"line {i}"}}[kind]
        return EventType(kind), data

    async def append(self, kinds: list[str]) -> None:
        batch = [self._event(k) for k in kinds]
        if self.finished:
            with pytest.raises(LeaseLost):  # a finished job's log is closed
                await self.store.append_events(self.job_id, batch, self.lease)
            return
        last = await self.store.append_events(self.job_id, batch, self.lease)
        assert last == self.written + len(batch)
        self.written = last
        self.expected += [(kind.value, data) for kind, data in batch]

    async def finish(self, status: JobStatus) -> None:
        job = await self.store.finish(self.job_id, status, result="r" if status is
                                      JobStatus.SUCCEEDED else None,
                                      error=None if status is JobStatus.SUCCEEDED else
                                      {"type": "E", "message": "m"}, lease=self.lease)
        assert job.status is status and job.last_event_id == self.written + 1
        self.written += 1
        self.expected.append((status.value, None))
        self.finished = True

    async def page(self, reader: Reader, limit: int) -> None:
        with anyio.fail_after(STEP):
            events = await self.store.read_events(self.job_id, reader.last, limit)
        assert len(events) <= limit
        reader.take(events)

    async def follow(self, reader: Reader, take: int | None) -> None:
        """Follow from the reader's last event; cut after ``take`` events (None: read
        until the stream ends on its own). Never waits on a live job with nothing new."""
        if take is not None and reader.last >= self.written and not self.finished:
            return
        wanted = None if take is None else min(take, self.written - reader.last)
        stream = self.store.follow(self.job_id, reader.last)
        try:
            with anyio.fail_after(STEP):
                async for batch in stream:
                    if wanted is not None:
                        batch = batch[:wanted]
                        wanted -= len(batch)
                    reader.take(batch)
                    if wanted is not None and wanted <= 0:
                        break  # the connection is cut, maybe in the middle of a batch
        finally:
            await _aclose(stream)

    async def run(self, step: tuple[Any, ...]) -> None:
        if step[0] == "append":
            await self.append(step[1])
        elif step[0] == "page":
            await self.page(self.readers[step[1]], step[2])
        else:
            await self.follow(self.readers[step[1]], step[2])

    def check(self) -> None:
        """Every reader, drained to the end, saw exactly the log that was written."""
        for reader in self.readers:
            assert [kind for _, kind, _ in reader.seen] == [k for k, _ in self.expected]
            for (_, _, data), (_, want) in zip(reader.seen, self.expected, strict=True):
                assert want is None or data == want  # None: the store's own contents


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def play(open_store: Callable[[], Awaitable[Store]], before: list[tuple[Any, ...]],
               status: JobStatus, after: list[tuple[Any, ...]]) -> None:
    store = await open_store()
    try:
        scenario = Scenario(store)
        await scenario.start()
        for step in before:
            await scenario.run(step)
        await scenario.finish(status)
        for step in after:
            await scenario.run(step)
        await scenario.append(["output"])  # refused: the job is over
        for reader in scenario.readers:
            await scenario.follow(reader, None)  # resume to the end, which must come
        scenario.check()
        # A reader that starts over sees the same log.
        fresh = Reader()
        await scenario.follow(fresh, None)
        assert fresh.seen == scenario.readers[0].seen
    finally:
        await store.close()


# -- the two stores ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), appendfsync=None) as server:
        yield server


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite")


@settings(max_examples=STORE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(before=steps, status=st.sampled_from(TERMINAL), after=reads)
def test_sqlite_every_reader_sees_every_event_once(
        store_dir: Path, before: list[tuple[Any, ...]], status: JobStatus,
        after: list[tuple[Any, ...]]) -> None:
    async def open_store() -> Store:
        store = SQLiteStore(store_dir / f"{uuid.uuid4().hex}.sqlite3")
        await store.open()
        return store

    anyio.run(play, open_store, before, status, after)


@settings(max_examples=STORE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(before=steps, status=st.sampled_from(TERMINAL), after=reads)
def test_redis_every_reader_sees_every_event_once(
        redis_server: RedisServer, before: list[tuple[Any, ...]], status: JobStatus,
        after: list[tuple[Any, ...]]) -> None:
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.flushdb()  # each example starts on an empty server

    async def open_store() -> Store:
        store = RedisStore(redis_server.url, prefix="props")
        await store.open()
        return store

    anyio.run(play, open_store, before, status, after)


# -- through the HTTP SSE endpoint -------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from tests.apps.http_app import app

    server = LiveServer(app, tmp_path_factory.mktemp("live") / "genq.sqlite3", FAST).start()
    yield server
    server.stop()


# ("sse", take, how): read the stream from the last seen id, cut after ``take`` events,
#   sending the resume point as the Last-Event-ID header or the last_event_id query
# ("page", limit): one page of the JSON log after the last seen id
http_reads = st.lists(st.one_of(
    st.tuples(st.just("sse"), st.integers(1, 12), st.sampled_from(["header", "query"])),
    st.tuples(st.just("page"), st.integers(1, 6), st.just("json"))), max_size=8)


def _resume(how: str, last: int) -> dict[str, Any]:
    if last == 0:
        return {}
    if how == "header":
        return {"headers": {"Last-Event-ID": str(last)}}
    return {"params": {"last_event_id": last}}


@settings(max_examples=HTTP_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 30), delay=st.sampled_from([0.0, 0.002, 0.01]), plan=http_reads)
def test_sse_resumes_give_every_event_exactly_once(live: LiveServer, n: int, delay: float,
                                                   plan: list[tuple[Any, ...]]) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job = submit(http, "tokens", n=n, delay=delay)
        path = f"/api/jobs/{job['id']}/events"
        seen: list[Shape] = []
        ended = False

        def last() -> int:
            return seen[-1][0] if seen else 0

        def read_sse(take: int | None, how: str) -> bool:
            """One connection, cut after ``take`` events (None: read until the server
            ends it); True when the server ended the stream."""
            stop_at = None if take is None else len(seen) + take
            with http.stream("GET", path, **_resume(how, last())) as response:
                assert response.status_code == 200, response.read()
                for message in iter_sse(response):
                    if message.data is None:
                        continue  # the opening comment, retry hint or a heartbeat
                    assert message.id is not None and message.event is not None
                    payload = message.payload
                    assert payload["type"] == message.event
                    seen.append((int(message.id), message.event, payload["data"]))
                    if stop_at is not None and len(seen) >= stop_at:
                        return False  # cut: the client goes away
                return True

        for kind, size, how in plan:
            if ended:
                break
            if kind == "page":
                page = http.get(path, params={"format": "json", "after": last(),
                                              "limit": size})
                assert page.status_code == 200, page.text
                events = page.json()["events"]
                assert len(events) <= size
                seen += [(e["id"], e["type"], e["data"]) for e in events]
                ended = bool(seen) and seen[-1][1] in {s.value for s in TERMINAL}
            else:
                ended = read_sse(size, how)
        if not ended:
            assert read_sse(None, "header"), "the stream ended before the terminal event"

        ids = [i for i, _, _ in seen]
        assert ids == list(range(1, len(ids) + 1)), f"lost or repeated: {ids}"
        log = [(e["id"], e["type"], e["data"]) for e in event_log(http, job["id"])]
        assert seen == log  # every event, once, in order
        assert seen[-1][1] == "succeeded"  # and the stream ended right after it
        assert [d["chunk"] for _, t, d in seen if t == "output"] == [f"t{i} " for i in
                                                                      range(n)]


def test_the_property_checker_catches_a_duplicate() -> None:
    """The invariant itself must be able to fail: a resumed reader that is handed an
    event it already had is caught."""
    reader = Reader()
    first = Event("j", 1, EventType.QUEUED, {"position": 1}, 0.0)
    second = Event("j", 2, EventType.STARTED, {}, 0.0)
    reader.take([first, second])
    with pytest.raises(AssertionError, match="not contiguous"):
        reader.take([second])

