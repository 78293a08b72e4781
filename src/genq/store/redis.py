"""The shared store: Redis, for API front ends and workers on many machines.

Shape, and why:

* **One Lua script per change** (``redis_lua.py``): submit with its limits, idempotency,
  cache and de-duplication; claim; append; finish; retry. Each is atomic in Redis, so any
  number of processes can race for the same queue, and each is safe to run twice, so
  redis-py may retry a command whose connection broke.
* **A sorted set per function** is the queue (score ``-priority``, members ordered by
  fair tag, then arrival: owners take turns within a priority, the rule in
  ``sqlite_queues``), so a claim is O(log n) and a job's queue position is one ZRANK.
  Per-owner counters of queued and running jobs (``max_queued``, ``max_running``) are
  kept by the same scripts, so quotas hold across every front end and worker.
* **A Redis Stream per job** is its event log, with ids ``0-<seq>``: the SSE id of an
  event is the same on SQLite and Redis, and ``XREAD`` after an id is the resume.
  Followers in a process share one blocking XREAD (``redis_follow.py``).
* **Leases with fencing**: each claim bumps the job's ``lease_token``; every write of a
  worker names its lease, and a worker whose lease lapsed is refused (``LeaseLost``).
  ``housekeep``, run by every worker, reclaims lapsed leases with a compare-and-set on
  the token, so two housekeepers never reclaim one job twice.
* **Outages**: a call is retried for ``retry_for`` s while Redis is unreachable; then
  the circuit (``redis_circuit.py``) fails calls at once until a probe finds Redis
  back, and housekeeping does not count the time Redis was away against a lease.
* **Pub/sub** tells workers of new work (``P:work``) and of cancellations (``P:cancel``),
  and front ends of status changes (``P:jobs``). A missed message costs latency, never
  correctness: workers also claim on a 1 s timer, and lease renewals report cancels.

Durability is Redis's: see docs/redis.md for ``appendfsync`` and what each loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.errors import (
    ArtifactTooLarge,
    IdempotencyConflict,
    JobNotFound,
    QueueFull,
    ResultTimeout,
)
from genq.jsoncodec import canonical_json, compact_json
from genq.models import (
    ArtifactRef,
    Event,
    EventType,
    Job,
    JobStatus,
    Lease,
    LeaseReport,
    SubmitReason,
    WorkerInfo,
)
from genq.store import redis_lua, routing, rules, urls
from genq.store.base import (
    PAGE_BYTES,
    CallbackT,
    FinishedJob,
    FinishedStats,
    NewEvent,
    StoreBase,
    SubmitPolicy,
    Submitted,
    Unsubscribe,
    Warmth,
)
from genq.store.redis_appends import AppendBatcher
from genq.store.redis_circuit import PROBE_INTERVAL, Circuit, unavailable
from genq.store.redis_follow import StreamHub
from genq.store.redis_webhooks import RedisWebhooks
from genq.store.retention import DEFAULT_RETAIN
from genq.store.urls import UNSET, Unset

DEFAULT_MAX_ARTIFACT_BYTES = 64 << 20  # per artifact; larger outputs belong in object storage
DEFAULT_RETRY_FOR = 15.0  # seconds a call waits for an unreachable Redis
URL_OPTIONS = ("prefix", "retry_for", "max_artifact_mb", "retain",  # genq's; others: redis-py
               "fair_share")
READ_PAGE = 1000  # events per XRANGE while a follower catches up
FILTERED_PAGE = 1000  # index entries per round trip of a filtered listing
# Seconds a ``P:holders:<affinity>`` set outlives its latest report: a model nobody holds
# any more leaves no key behind (its members' scores already say they expired).
HOLDERS_GRACE = 60

_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
_EVENT_TYPES = {t.value.encode(): t for t in EventType}

P = ParamSpec("P")
T = TypeVar("T")


def _retried(method: Callable[P, Coroutine[Any, Any, T]]
             ) -> Callable[P, Coroutine[Any, Any, T]]:
    """Retry a store call while Redis is unreachable (it restarts, a network blip), with
    backoff, for the store's ``retry_for`` seconds; then raise StoreUnavailable. Safe
    because every call is: each script may run twice (see redis_lua)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, RedisStore)
        return await store.retrying(lambda: method(*args, **kwargs))

    return wrapper


def _str(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


def _float(value: bytes | None) -> float | None:
    return None if value is None or value == b"" else float(value)


def _job_from_hash(h: Mapping[bytes, bytes]) -> Job:
    error = h.get(b"error")
    return Job(
        id=h[b"id"].decode(), function=h[b"function"].decode(),
        input=json.loads(h[b"input"]), owner=h[b"owner"].decode(),
        status=JobStatus(h[b"status"].decode()), priority=int(h[b"priority"]),
        created_at=float(h[b"created_at"]), started_at=_float(h.get(b"started_at")),
        finished_at=_float(h.get(b"finished_at")), attempts=int(h[b"attempts"]),
        max_attempts=int(h[b"max_attempts"]), not_before=float(h.get(b"not_before") or 0),
        expires_at=_float(h.get(b"expires_at")),
        result=json.loads(h.get(b"result") or b"null"),
        error=json.loads(error) if error else None, cache_key=_str(h.get(b"cache_key")),
        idempotency_key=_str(h.get(b"idempotency_key")), worker_id=_str(h.get(b"worker_id")),
        lease_until=_float(h.get(b"lease_until")), lease_token=int(h.get(b"lease_token") or 0),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        last_event_id=int(h.get(b"seq") or 0), affinity=_str(h.get(b"affinity")),
        owner_max_running=int(h[b"owner_max_running"]) if h.get(b"owner_max_running")
        else None,
        ticket=_str(h.get(b"ticket")),
    )


def _job_from_flat(flat: Sequence[bytes | str]) -> Job:
    """A job from HGETALL as a script returns it: field, value, field, value..."""
    items = [v if isinstance(v, bytes) else v.encode() for v in flat]
    return _job_from_hash(dict(zip(items[::2], items[1::2], strict=True)))


def _job_hash(job: Job) -> list[str]:
    """The job as field, value pairs for HSET; None is stored as ''."""

    def opt(value: object) -> str:
        return "" if value is None else str(value)

    return [
        "id", job.id, "function", job.function, "owner", job.owner,
        "status", job.status.value, "priority", str(job.priority),
        "input", canonical_json(job.input), "created_at", repr(job.created_at),
        "started_at", opt(job.started_at), "finished_at", opt(job.finished_at),
        "attempts", str(job.attempts), "max_attempts", str(job.max_attempts),
        "not_before", repr(job.not_before), "expires_at", opt(job.expires_at),
        "result", compact_json(job.result),
        "error", "" if job.error is None else compact_json(job.error),
        "cache_key", opt(job.cache_key), "idempotency_key", opt(job.idempotency_key),
        "worker_id", "", "lease_until", "", "lease_token", "0", "cancel_requested", "0",
        "seq", "0", "qm", "", "affinity", opt(job.affinity),
        "owner_max_running", opt(job.owner_max_running),
        "ticket", opt(job.ticket), "callers", "0" if job.ticket is None else "1",
    ]


StreamEntries = Sequence[Any] | None  # [[b"0-7", [b"t", type, b"d", data, b"ts", ts]], ...]
BytesHash = dict[bytes, bytes]


def _bytes_hash(reply: object) -> BytesHash:
    """A hash as read with ``decode_responses=False`` (redis-py types it bytes | str)."""
    return cast(BytesHash, reply)


def _bytes_list(reply: object) -> list[bytes]:
    return cast("list[bytes]", reply)


def _decode_events(job_id: str, entries: StreamEntries) -> list[Event]:
    """Events from raw stream entries (redis-py's own parsing into a dict per entry is
    turned off for XRANGE and XREAD: it cost more than the rest of a read)."""
    if not entries:
        return []
    # One json.loads for the page: each ``d`` is a JSON text, so joined with commas in
    # brackets they are an array (as in the SQLite store).
    datas = json.loads(b"[" + b",".join(fields[3] for _, fields in entries) + b"]")
    return [Event(job_id, int(entry_id[2:]),
                  _EVENT_TYPES.get(fields[1]) or EventType(fields[1].decode()),
                  data, float(fields[5]), len(fields[3]))
            for (entry_id, fields), data in zip(entries, datas, strict=True)]


def _without_query_params(url: str, names: tuple[str, ...]) -> str:
    """``url`` without genq's own parameters (the rest go to redis-py)."""
    parts = urlsplit(url)
    kept = "&".join(p for p in parts.query.split("&") if p and p.split("=", 1)[0] not in names)
    return parts._replace(query=kept).geturl()


def _raw_streams(connection: aioredis.Redis) -> aioredis.Redis:
    for command in ("XRANGE", "XREAD"):
        connection.set_response_callback(command, lambda response, **_: response)
    return connection


def _event_json(data: dict[str, Any]) -> str:
    """Compact JSON of an event's data; a text chunk, the bulk of any token stream, is
    written directly (a tenth of the encoder's cost), byte for byte the same."""
    if len(data) == 1 and type(chunk := data.get("chunk")) is str:
        return f'{{"chunk":{_encode_str(chunk)}}}'
    return compact_json(data)


class RedisStore(StoreBase):
    """Jobs, queues and event logs in Redis, shared by every process that opens it."""

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "genq",
                 max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
                 retry_for: float = DEFAULT_RETRY_FOR,
                 retain: float | None = DEFAULT_RETAIN, fair_share: bool = True) -> None:
        super().__init__(retain=retain)
        self.url = url
        # Owners take turns within a priority (redis_lua's fair tags; docs/sharing.md).
        # Every process of a cluster should say the same: each tags the jobs it queues.
        self.fair_share = fair_share
        self._fair = "1" if fair_share else "0"
        self.prefix = prefix
        self.max_artifact_bytes = max_artifact_bytes
        # How long a call keeps retrying while Redis is unreachable: a Redis restart
        # stalls genq for that long instead of failing jobs. After that the circuit is
        # open: calls fail at once until a probe finds Redis back (redis_circuit.py).
        self.retry_for = retry_for
        self._circuit = Circuit()
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._hub: StreamHub | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        # Channel -> confirmed once Redis has the subscription. Scripts wait for pending
        # ones, so whatever this store changes after a subscribe_* call is reported.
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._subscribe_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seqs: dict[str, int] = {}  # job id -> last event id, for jobs claimed here
        self._appends = AppendBatcher(self._run_appends)
        self._open = False

    @classmethod
    def from_url(cls, url: str, *, retain: float | Unset | None = UNSET) -> RedisStore:
        """A store for ``redis://[:password@]host:port/db``, ``rediss://`` (TLS) or
        ``unix:///path.sock``, with genq's query parameters ``prefix``, ``retry_for``
        (seconds), ``max_artifact_mb``, ``retain`` and ``fair_share`` (docs/redis.md);
        every other parameter goes to redis-py. ``retain`` given here (``--retain``) overrides the
        URL's."""
        if urls.scheme(url) not in ("redis", "rediss", "unix"):
            raise ValueError(f"{url!r} is not a Redis URL: use redis://host:port/db")
        query = urls.query_options(url)
        window = urls.retain_option(url, query, retain)
        retry_for = urls.option(url, query, "retry_for", float, DEFAULT_RETRY_FOR)
        max_artifact_bytes = urls.option(url, query, "max_artifact_mb",
                                         lambda mb: int(float(mb) * (1 << 20)),
                                         DEFAULT_MAX_ARTIFACT_BYTES)
        fair = urls.option(url, query, "fair_share", urls.parse_flag, True)
        return cls(_without_query_params(url, URL_OPTIONS), prefix=query.get("prefix", "genq"),
                   retry_for=retry_for, max_artifact_bytes=max_artifact_bytes, retain=window,
                   fair_share=fair)

    # -- life cycle ------------------------------------------------------------------
    def _connect(self, **options: Any) -> aioredis.Redis:
        # RESP2 on every redis-py: 8.x speaks RESP3 by default, where XREAD answers a map
        # instead of a list and script replies change shape; genq parses RESP2 replies.
        connection: aioredis.Redis = aioredis.Redis.from_url(
            self.url, decode_responses=False, health_check_interval=30,
            socket_keepalive=True, protocol=2, **options)
        return _raw_streams(connection)

    @_retried
    async def open(self) -> None:
        self._redis = self._connect()
        await self._redis.ping()
        self._scripts = {name: self._redis.register_script(getattr(redis_lua, name))
                         for name in ("SUBMIT", "CLAIM", "APPEND", "FINISH", "REQUEUE",
                                      "CANCEL", "EXTEND", "SWEEP", "RETAIN", "REGISTER",
                                      "UNREGISTER")}
        self._hub = StreamHub(lambda: self._connect(single_connection_client=True),
                              self._redis, self._events_key, _decode_events)
        self._hub.start()
        self._pubsub = self._redis.pubsub()
        self._open = True
        for channel, callbacks in (("work", self._work_callbacks),
                                   ("cancel", self._cancel_callbacks),
                                   ("jobs", self._job_callbacks)):
            if callbacks:  # asked for before open: subscribed before open returns
                await self._subscribe(channel)

    async def close(self) -> None:
        self._open = False
        if self._hub is not None:
            await self._hub.close()
        for task in [self._listener, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        self._redis = self._hub = self._pubsub = self._listener = None
        for confirmed in self._subscribed.values():
            confirmed.cancel()
        self._subscribed.clear()

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again while Redis is unreachable, for up to ``retry_for`` s; at
        once StoreUnavailable while the circuit is open (Redis known to be down)."""
        circuit = self._circuit
        circuit.check()
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                result = await call()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                circuit.failed()
                if time.monotonic() + delay > deadline or not self._open:
                    self._open_circuit()
                    raise unavailable(f"the Redis store is unreachable: {exc}") from None
                circuit.check()  # another call found it down meanwhile
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
            else:
                circuit.answered()
                return result

    def _open_circuit(self) -> None:
        """Fail fast from now on, and PING until Redis answers again."""
        if self._circuit.opened or not self._open:
            return
        self._circuit.open()

        async def probe() -> None:
            while self._circuit.opened:
                await asyncio.sleep(PROBE_INTERVAL)
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    await self._r().ping()
                    self._circuit.answered()

        self._spawn(probe())

    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the store is not open")
        return self._redis

    async def _run(self, script: str, *args: Any) -> Any:
        if self._subscribing:
            await asyncio.gather(*self._subscribing)
        return await self._scripts[script](args=[self.prefix, *args])

    async def _run_appends(self, args: list[Any]) -> list[int]:
        ts = repr(time.time())
        return list(await self.retrying(lambda: self._run("APPEND", ts, *args)))

    @property
    def _subscribing(self) -> list[asyncio.Future[None]]:
        return [f for f in self._subscribed.values() if not f.done()]

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _events_key(self, job_id: str) -> str:
        return f"{self.prefix}:ev:{job_id}"

    # -- submission and reads --------------------------------------------------------
    @_retried
    async def create_job(self, job: Job, policy: SubmitPolicy) -> Submitted:
        ttl = policy.cache_ttl
        reply = await self._run(
            "SUBMIT", repr(time.time()), job.id, job.function, job.owner, job.priority,
            canonical_json(job.input), repr(job.created_at), job.cache_key or "",
            job.idempotency_key or "", "" if policy.max_queue is None else policy.max_queue,
            "" if ttl is None else ("inf" if math.isinf(ttl) else repr(ttl)),
            "1" if policy.dedupe else "0",
            "" if job.expires_at is None else repr(job.expires_at),
            "" if policy.owner_max_queued is None else policy.owner_max_queued, self._fair,
            *_job_hash(job))
        outcome = reply[0].decode()
        if outcome == "owner_full":
            raise rules.owner_quota_refusal(job.owner, int(reply[1]), policy)
        if outcome == "full":
            raise QueueFull(
                f"the queue of {job.function!r} is full ({int(reply[1])} of "
                f"{policy.max_queue} jobs waiting); retry later",
                function=job.function, max_queue=policy.max_queue,
                retry_after=policy.retry_after)
        if outcome == "conflict":
            raise IdempotencyConflict(
                f"idempotency key {job.idempotency_key!r} was already used for a "
                "different function or input",
                idempotency_key=job.idempotency_key, job_id=reply[1].decode())
        stored = _job_from_flat(reply[1])
        if outcome == "new":
            return Submitted(stored, created=True, ticket=job.ticket)
        reason = SubmitReason(outcome)
        # An idempotent answer is the first submission's: its ticket too.
        ticket = stored.ticket if reason is SubmitReason.IDEMPOTENT else job.ticket
        return Submitted(stored, created=False, reason=reason, ticket=ticket)

    @_retried
    async def get_job(self, job_id: str) -> Job | None:
        h = _bytes_hash(await self._r().hgetall(self._key("job", job_id)))
        return _job_from_hash(h) if h else None

    @_retried
    async def list_jobs(self, *, owner: str | None = None, function: str | None = None,
                        status: JobStatus | None = None, limit: int = 50,
                        before: float | None = None,
                        before_id: str | None = None) -> list[Job]:
        if status is JobStatus.QUEUED or status is JobStatus.RUNNING:
            return await self._list_live(owner, function, status, limit, before, before_id)
        index = self._key("idx", "owner", owner) if owner is not None else self._key("idx", "all")
        # Members of one score come in reverse byte order of the id, which is the order
        # on (created_at, id). Paging on the pair reads the cursor's instant too (scores
        # with it) and drops the ids at or above the cursor's.
        tied = before is not None and before_id is not None
        top = "+inf" if before is None else repr(before) if tied else f"({before!r}"
        cursor_id = (before_id or "").encode()
        filtered = function is not None or status is not None
        # A filter may match few jobs: walk the index in growing pages, reading only the
        # two fields it tests, and the whole hash of the matches alone.
        page = max(limit, 100) * (2 if filtered else 1)
        offset = 0
        found: list[Job] = []
        r = self._r()
        while len(found) < limit:
            reply = await r.zrevrangebyscore(index, top, "-inf", start=offset, num=page,
                                             withscores=tied)
            if not reply:
                break
            offset += len(reply)
            ids = ([m for m, score in cast("list[tuple[bytes, float]]", reply)
                    if score != before or m < cursor_id] if tied else _bytes_list(reply))
            if filtered:
                page = min(page * 4, FILTERED_PAGE)
                async with r.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hmget(self._key("job", job_id.decode()), ["function", "status"])
                    fields = await pipe.execute()
                ids = [job_id for job_id, (fn, st) in zip(ids, fields, strict=True)
                       if (function is None or fn == function.encode())
                       and (status is None or st == status.value.encode())]
            async with r.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self._key("job", job_id.decode()))
                hashes = await pipe.execute()
            for h in hashes:
                if not h:
                    continue  # removed meanwhile
                job = _job_from_hash(h)
                if ((function is None or job.function == function)
                        and (status is None or job.status is status)):
                    found.append(job)
        return found[:limit]

    async def _list_live(self, owner: str | None, function: str | None, status: JobStatus,
                         limit: int, before: float | None,
                         before_id: str | None) -> list[Job]:
        """Queued or running jobs, from the queues and the lease set rather than a walk
        of every job ever listed: the cost follows the live jobs, not the history."""
        r = self._r()
        if status is JobStatus.RUNNING:
            ids = _bytes_list(await r.zrange(self._key("leases"), 0, -1))
        else:
            functions = ([function] if function is not None else
                         [f.decode() for f in _bytes_list(await r.smembers(self._key("fns")))])
            async with r.pipeline(transaction=False) as pipe:
                for fn in functions:
                    pipe.zrange(self._key("q", fn), 0, -1)
                    pipe.zrange(self._key("delayed", fn), 0, -1)
                replies = await pipe.execute()
            ids = [m.partition(b":")[2] for ready in replies[::2]  # "<hex>:<id>"
                   for m in ready]
            ids += [m for delayed in replies[1::2] for m in delayed]
        async with r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._key("job", job_id.decode()),
                           ["owner", "function", "status", "created_at"])
            fields = await pipe.execute()
        wanted = sorted(
            ((float(created), job_id) for job_id, (own, fn, st, created)
             in zip(ids, fields, strict=True)
             if st == status.value.encode() and (owner is None or own == owner.encode())
             and (function is None or fn == function.encode())
             and (before is None or (float(created) < before if before_id is None else
                                     (float(created), job_id) < (before, before_id.encode())))),
            reverse=True)[:limit]
        async with r.pipeline(transaction=False) as pipe:
            for _, job_id in wanted:
                pipe.hgetall(self._key("job", job_id.decode()))
            hashes = await pipe.execute()
        return [_job_from_hash(h) for h in hashes if h]

    @_retried
    async def queue_position(self, job_id: str) -> int | None:
        r = self._r()
        function, member = _bytes_list(await r.hmget(self._key("job", job_id),
                                                     ["function", "qm"]))
        if not member:
            return None
        rank = cast("int | None", await r.zrank(self._key("q", function.decode()), member))
        return None if rank is None else rank + 1

    @_retried
    async def queue_depth(self, function: str) -> int:
        async with self._r().pipeline(transaction=False) as pipe:
            pipe.zcard(self._key("q", function))
            pipe.zcard(self._key("delayed", function))
            ready, delayed = await pipe.execute()
        return int(ready) + int(delayed)

    # -- events ----------------------------------------------------------------------
    async def append_events(self, job_id: str, events: Sequence[NewEvent], lease: Lease) -> int:
        if not events:
            job = await self.get_job(job_id)
            if job is None or not job.held_by(lease):
                raise rules.lease_lost(job_id, lease)
            return job.last_event_id
        # One argument for the whole batch, a line per event: compact JSON never holds a
        # raw line break, and one big argument packs far faster than two per event.
        packed = "\n".join([f"{etype.value} {_event_json(data)}" for etype, data in events])
        known = self._seqs.get(job_id)
        last = await self._appends.append(job_id, lease,
                                          None if known is None else known + 1, packed)
        if last < 0:
            self._seqs.pop(job_id, None)
            raise rules.lease_lost(job_id, lease)
        self._seqs[job_id] = last
        return last

    @_retried
    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000,
                          max_bytes: int = PAGE_BYTES) -> list[Event]:
        # A script rather than XRANGE COUNT: a count alone of 1 MB entries is a reply of
        # a GB. Registered on first use (a read needs no subscription to wait for).
        read = self._scripts.get("READ")
        if read is None:
            read = self._scripts["READ"] = self._r().register_script(redis_lua.READ)
        entries = await read(args=[self.prefix, job_id, after, limit, max_bytes])
        return _decode_events(job_id, entries)

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        # A cursor past the log's end (a Last-Event-ID from elsewhere): the hub's XREAD
        # from there would never see the terminal event, so follow from the end and
        # yield nothing at or below the cursor.
        async with contextlib.aclosing(self._follow(job, min(after, job.last_event_id))) \
                as batches:
            async for batch in batches:
                if batch[0].id > after:
                    yield batch
                elif batch[-1].id > after:
                    yield [e for e in batch if e.id > after]

    async def _follow(self, job: Job, after: int) -> AsyncGenerator[list[Event], None]:
        job_id = job.id
        while True:
            # Catch up by reading (at first, and whenever this follower fell too far
            # behind the live feed), then follow live from where the reading ended.
            while True:
                events = await self.read_events(job_id, after, READ_PAGE)
                if not events:
                    break
                yield events
                after = events[-1].id
                if events[-1].terminal:
                    return
            if job.status.terminal and after >= job.last_event_id:
                return  # the log was complete when the job was read
            if self._hub is None:
                return  # the store closed
            async with self._hub.watch(job_id, after) as watch:
                while (batch := await watch.next_batch()) is not None:
                    yield batch
                    after = batch[-1].id
                    if batch[-1].terminal:
                        return
                if not watch.overflowed:
                    return  # the store closed

    async def wait_terminal(self, job_id: str, timeout: float | None = None) -> Job:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        if job.status.terminal:
            return job
        try:
            with anyio.fail_after(timeout):
                async for batch in self.follow(job_id, job.last_event_id):
                    if batch[-1].terminal:
                        break
        except TimeoutError:
            current = await self.get_job(job_id)
            state = "gone" if current is None else current.status.value
            raise ResultTimeout(
                f"job {job_id} did not finish within {timeout} s (it is still {state})",
                job_id=job_id, timeout=timeout) from None
        done = await self.get_job(job_id)
        if done is None or not done.status.terminal:
            raise RuntimeError("the store was closed")
        return done

    # -- the worker's side -----------------------------------------------------------
    @_retried
    async def claim(self, functions: Iterable[str], worker_id: str, lease: float,
                    limits: Mapping[str, int] | None = None,
                    warmth: Warmth | None = None) -> Job | None:
        jobs = await self._claim(dict.fromkeys(functions, 1), 1, worker_id, lease, limits,
                                 warmth)
        return jobs[0] if jobs else None

    @_retried
    async def claim_many(self, wants: Mapping[str, int], worker_id: str, lease: float,
                         limits: Mapping[str, int] | None = None,
                         warmth: Warmth | None = None) -> list[Job]:
        return await self._claim(wants, sum(wants.values()), worker_id, lease, limits,
                                 warmth)

    async def _claim(self, wants: Mapping[str, int], count: int, worker_id: str,
                     lease: float, limits: Mapping[str, int] | None,
                     warmth: Warmth | None) -> list[Job]:
        quads: list[Any] = []
        for function, want in wants.items():
            limit = None if limits is None else limits.get(function)
            # Warm routing for the functions warmth gives a bound (genq.store.routing);
            # a bound of 0 passes no job over, so it is plain claim order too.
            bound = 0.0 if warmth is None else warmth.waits.get(function, 0.0)
            if want > 0:
                quads += (function, "" if limit is None else limit, want,
                          repr(bound) if bound > 0 else "")
        if not quads:
            return []
        holds = sorted(warmth.holds) if warmth is not None else []
        now = time.time()
        _, expired_data = rules.expired_event()
        reply = await self._run("CLAIM", repr(now), worker_id, repr(now + lease),
                                uuid.uuid4().hex, compact_json(expired_data), count,
                                routing.WINDOW, len(holds), *holds, *quads)
        jobs = [_job_from_flat(flat) for flat in reply]
        for job in jobs:
            self._seqs[job.id] = job.last_event_id
        return jobs

    @_retried
    async def extend_leases(self, worker_id: str, leases: Mapping[str, int],
                            lease: float) -> LeaseReport:
        if not leases:
            return LeaseReport()
        now = time.time()
        args: list[Any] = [worker_id, repr(now + lease), repr(now)]
        for job_id, token in leases.items():
            args += (job_id, token)
        cancelled, lost = await self._run("EXTEND", *args)
        return LeaseReport(frozenset(i.decode() for i in cancelled),
                           frozenset(i.decode() for i in lost))

    @_retried
    async def finish(self, job_id: str, status: JobStatus, *, result: Any = None,
                     error: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                     lease: Lease | None = None) -> Job:
        _, payload = rules.terminal_event(status, result=result, error=error, data=data)
        reply = await self._finish(job_id, status, payload, result=result, error=error,
                                   worker="" if lease is None else lease.worker_id,
                                   token="" if lease is None else lease.token)
        outcome = reply[0]
        if outcome == b"missing":
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        if outcome == b"lost":
            assert lease is not None
            raise rules.lease_lost(job_id, lease)
        self._seqs.pop(job_id, None)
        return _job_from_flat(reply[1])

    async def _finish(self, job_id: str, status: JobStatus, payload: dict[str, Any], *,
                      result: Any = None, error: dict[str, Any] | None = None,
                      worker: str = "", token: int | str = "", lapsed: str = "",
                      cancel: str = "", bump: bool = False) -> Any:
        return await self._run(
            "FINISH", job_id, repr(time.time()), status.value, compact_json(result),
            "" if error is None else compact_json(error), compact_json(payload), worker, token,
            lapsed,
            cancel, "1" if bump else "0")

    @_retried
    async def retry(self, job_id: str, delay: float, error: dict[str, Any],
                    lease: Lease) -> Job:
        return await self._back_to_queue(
            job_id, lease, delay, 0, lambda job: rules.retrying_event(job, delay, error)[1])

    @_retried
    async def requeue(self, job_id: str, reason: str, lease: Lease) -> Job:
        return await self._back_to_queue(
            job_id, lease, 0.0, -1,
            lambda job: rules.requeued_event(job.attempts, reason, counted=False)[1])

    async def _back_to_queue(self, job_id: str, lease: Lease, delay: float, delta: int,
                             payload: Callable[[Job], dict[str, Any]]) -> Job:
        """Read, decide with genq's rules, then write if nothing changed meanwhile (the
        token fences other workers; the cancel flag is compared, since a cancel requested
        between the read and the write must win)."""
        while True:
            job = await self.get_job(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}", job_id=job_id)
            if job.lease_token != lease.token:
                raise rules.lease_lost(job_id, lease)
            if job.status is not JobStatus.RUNNING:
                return job  # this very call, retried after a lost reply
            if job.cancel_requested:
                _, cancelled = rules.cancelled_event()
                reply = await self._finish(job_id, JobStatus.CANCELLED, cancelled,
                                           worker=lease.worker_id, token=lease.token,
                                           cancel="1")
            else:
                not_before = time.time() + delay if delay > 0 else 0.0
                reply = await self._run(
                    "REQUEUE", job_id, repr(time.time()), lease.token, lease.worker_id, "",
                    "0", repr(not_before), delta, "0", compact_json(payload(job)), self._fair)
            outcome = reply[0]
            if outcome == b"lost":
                raise rules.lease_lost(job_id, lease)
            if outcome in (b"ok", b"done"):
                self._seqs.pop(job_id, None)
                back = _job_from_flat(reply[1])
                if back.status is JobStatus.QUEUED and delay > 0:
                    self._announce_work_later(back.function, delay)
                return back
            # "changed": the cancel flag moved between the read and the write; decide again

    def _announce_work_later(self, function: str, delay: float) -> None:
        """When a retry's delay ends, tell every worker (``housekeep`` is the fallback
        should this process be gone by then)."""

        async def announce() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(RedisError):
                await self._r().publish(self._key("work"), function)

        self._spawn(announce())

    @_retried
    async def cancel(self, job_id: str, reason: str = rules.CANCELLED_BY_REQUEST, *,
                     ticket: str | None = None) -> Job:
        _, payload = rules.cancelled_event(reason)
        reply = await self._run("CANCEL", job_id, repr(time.time()), compact_json(payload),
                                ticket or "")
        if reply[0] == b"missing":
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        if reply[0] == b"unknown":
            raise rules.unknown_ticket(job_id)
        return _job_from_flat(reply[1])

    @_retried
    async def housekeep(self, now: float) -> None:
        await super().housekeep(now)  # retried as a whole while Redis is unreachable

    async def _expire_queued(self, now: float) -> None:
        # SWEEP also moves retries whose delay is over to their queue, and announces them.
        _, expired = rules.expired_event()
        await self._run("SWEEP", repr(now), compact_json(expired))

    async def _reclaim_lapsed(self, now: float) -> None:
        lapsed = _bytes_list(await self._r().zrangebyscore(
            self._key("leases"), "-inf", repr(now), start=0, num=100))
        for job_id in lapsed:
            h = _bytes_hash(await self._r().hgetall(self._key("job", job_id.decode())))
            job = _job_from_hash(h) if h else None
            if job is None or job.status is not JobStatus.RUNNING:
                await self._r().zrem(self._key("leases"), job_id)
                continue
            # Time Redis was away does not count against a lease (redis_circuit.py).
            if job.lease_until is None or self._circuit.lease_lapsed(
                    _float(h.get(b"lease_at")), job.lease_until, now):
                await self._reclaim(job, now)

    @_retried
    async def purge_finished(self, before: float, limit: int) -> int:
        return int(await self._run("RETAIN", repr(before), limit))

    async def _reclaim(self, job: Job, now: float) -> None:
        """A lease lapsed: compare-and-set on the token, the lease and the cancel flag
        read, so a renewal or a cancel in between wins, and only one housekeeper acts."""
        transition = rules.orphan_transition(job, rules.LEASE_LAPSED)
        cancel = "1" if job.cancel_requested else "0"
        if transition.status is JobStatus.QUEUED:
            await self._run("REQUEUE", job.id, repr(time.time()), job.lease_token, "",
                            repr(now), cancel, "0", 0, "1", compact_json(transition.event[1]),
                            self._fair)
        else:
            await self._finish(job.id, transition.status, transition.event[1],
                               error=transition.error, token=job.lease_token,
                               lapsed=repr(now), cancel=cancel, bump=True)

    # -- the cluster -----------------------------------------------------------------
    @_retried
    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        # With the models it holds (``P:holders:<affinity>``), which claims route by.
        now = time.time()
        until = info.seen_at + ttl
        await self._run("REGISTER", info.id, compact_json(info.to_dict()), repr(until),
                        repr(now), max(1, math.ceil(until - now)) + HOLDERS_GRACE,
                        *sorted(info.holds))

    @_retried
    async def unregister_worker(self, worker_id: str) -> None:
        await self._run("UNREGISTER", worker_id)

    @_retried
    async def workers(self) -> list[WorkerInfo]:
        r = self._r()
        now = time.time()
        gone = await r.zrangebyscore(self._key("workers", "until"), "-inf", repr(now))
        if gone:
            await r.hdel(self._key("workers"), *gone)
            await r.zrem(self._key("workers", "until"), *gone)
        reports = _bytes_hash(await r.hgetall(self._key("workers")))
        return sorted((WorkerInfo.from_dict(json.loads(v)) for v in reports.values()),
                      key=lambda w: w.id)

    @_retried
    async def running_counts(self) -> dict[str, int]:
        counts = _bytes_hash(await self._r().hgetall(self._key("running")))
        return {k.decode(): int(v) for k, v in counts.items() if int(v) > 0}

    # -- webhooks --------------------------------------------------------------------
    @functools.cached_property
    def webhooks(self) -> RedisWebhooks:
        """The jobs' webhook records (store/redis_webhooks.py), beside the jobs."""
        return RedisWebhooks(self._r, self.retrying, self.prefix)

    @_retried
    async def finished_stats(self, since: float, limit: int) -> FinishedStats:
        r = self._r()
        totals: dict[tuple[str, str, str], int] = {}
        for key, n in _bytes_hash(await r.hgetall(self._key("totals"))).items():
            owner, function, status = key.decode().split("\n")
            totals[(owner, function, status)] = int(n)
        ids = _bytes_list(await r.zrevrangebyscore(self._key("finished"), "+inf", repr(since),
                                                   start=0, num=limit))
        fields = ["owner", "function", "status", "created_at", "started_at", "finished_at"]
        async with r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._key("job", job_id.decode()), fields)
            rows = await pipe.execute()
        recent = [FinishedJob(owner.decode(), function.decode(), JobStatus(status.decode()),
                              float(created), _float(started), float(finished))
                  for owner, function, status, created, started, finished in rows
                  if owner is not None]  # purged between the two reads
        return FinishedStats(totals, recent)

    # -- artifacts -------------------------------------------------------------------
    @_retried
    async def put_artifact(self, job_id: str, name: str, content_type: str,
                           data: bytes) -> ArtifactRef:
        if len(data) > self.max_artifact_bytes:
            raise ArtifactTooLarge(
                f"{name!r} is {len(data)} bytes; the Redis store keeps artifacts of up to "
                f"{self.max_artifact_bytes} bytes", limit=self.max_artifact_bytes)
        ref = ArtifactRef(uuid.uuid4().hex, job_id, name, content_type, len(data))
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.hset(self._key("art", ref.id), mapping={
                "job_id": job_id, "name": name, "content_type": content_type,
                "size": len(data), "data": data})
            pipe.sadd(self._key("arts", job_id), ref.id)  # deleted with the job
            await pipe.execute()
        return ref

    @_retried
    async def get_artifact(self, artifact_id: str) -> tuple[ArtifactRef, bytes] | None:
        h = _bytes_hash(await self._r().hgetall(self._key("art", artifact_id)))
        if not h:
            return None
        ref = ArtifactRef(artifact_id, h[b"job_id"].decode(), h[b"name"].decode(),
                          h[b"content_type"].decode(), int(h[b"size"]))
        return ref, h[b"data"]

    # -- notifications ---------------------------------------------------------------
    def _add_subscriber(self, feed: str, callbacks: list[CallbackT],
                        callback: CallbackT) -> Unsubscribe:
        unsubscribe = super()._add_subscriber(feed, callbacks, callback)
        if self._open:  # else open subscribes
            self._subscribe(feed)
        return unsubscribe

    def _subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscribe; the future is done once Redis confirms (the listener sees the
        reply). Registered at once, so scripts run from now on wait for it."""
        confirmed = self._subscribed.get(channel)
        if confirmed is None:
            confirmed = self._subscribed[channel] = asyncio.get_running_loop().create_future()
            self._spawn(self._send_subscribe(channel))
        return confirmed

    async def _send_subscribe(self, channel: str) -> None:
        async with self._subscribe_lock:  # two at once would each open a connection
            await self._pubsub.subscribe(self._key(channel))
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="genq-redis-pubsub")

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=False,
                                                         timeout=None)
                backoff = 0.05
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await asyncio.sleep(backoff)  # redis-py re-subscribes on reconnect
                backoff = min(2.0, backoff * 2)
                self._notify_work()  # notifications may have been missed meanwhile
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode().rsplit(":", 1)[1]
        if message["type"] == "subscribe":
            confirmed = self._subscribed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            if channel == "work":  # work may have arrived before the subscription held
                self._notify_work()
            return
        if message["type"] != "message":
            return
        if channel == "work":
            self._notify_work()
        elif channel == "cancel":
            self._notify_cancel(message["data"].decode())
        elif channel == "jobs" and self._job_callbacks:
            self._notify_job(_job_from_flat(json.loads(message["data"])))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

