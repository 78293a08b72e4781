"""The HTTP transport: what ``genq.AsyncClient(url)`` and ``genq.Client(url)`` run on.

The clients' surface is the same as app.local()'s (genq.client.async_client); this
module is how its calls reach a server. Robustness is the point:

* **Event streams resume.** A dropped SSE connection (reset, proxy timeout, 5xx, a
  server restart) is reopened with ``Last-Event-ID`` after a backoff that honours the
  server's ``retry:`` hint, so the caller sees every event exactly once, in order.
  A stream silent for longer than ``stream_idle_timeout`` (several missed heartbeats)
  is treated as dead and reopened.
* **Submits retry safely.** Every submit carries an ``Idempotency-Key`` (a fresh one
  unless you pass your own), so resending after a lost response never runs a job twice.
* **Other calls** retry on connection errors and 502/503/504 with backoff, honouring
  ``Retry-After``, and wait out a 429 ``rate_limited`` for its ``Retry-After`` (raising
  ``RateLimited`` if that would pass ``retry_for``). A full queue (429 ``queue_full``)
  is not retried: it raises ``QueueFull`` with ``retry_after`` so the caller decides.

* **Answers are checked.** A success that is not JSON, JSON not of the documented
  shape, or an event stream with a non-numeric id raises ``genq.ProtocolError`` naming
  the URL, never a bare ``ValueError`` or ``KeyError``. An event type this genq does not
  know (a newer server's) passes through, its ``Event.type`` a plain ``str``.

Timeouts (seconds): ``connect`` 5, ``read`` 30 per request, ``stream_idle_timeout`` 45
(the server's heartbeat is 15 s by default); ``retry_for`` 120 caps how long one call
keeps retrying. ``result(timeout=...)`` long-polls in slices of at most 30 s.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from genq import errors, paging
from genq.backoff import backoff_delay
from genq.errors import ConnectionLost, ProtocolError, RemoteError
from genq.models import Event, JobInfo, JobStatus, SubmitReason, event_type

T = TypeVar("T")

_RETRY_STATUSES = {502, 503, 504}
_POLL_SLICE = 30.0
_MAX_CONNECTIONS = 200
_MAX_KEEPALIVE = 100
_POOLS = 16  # see _Pools


def _backoff(attempt: int) -> float:
    return backoff_delay(attempt, base=0.1, cap=5.0)


def _rate_limited(response: httpx.Response) -> bool:
    """A 429 that says "slow down" (retried after Retry-After), not a full queue."""
    if response.status_code != 429:
        return False
    try:
        return bool(response.json()["error"]["code"] == errors.RateLimited.code)
    except (ValueError, KeyError, TypeError):
        return False


def _error_of(response: httpx.Response) -> errors.GenqError:
    """The genq error an error answer stands for (``errors.from_wire``); an answer that
    is not genq's JSON (a proxy's page) is a RemoteError with its status."""
    try:
        body = response.json()["error"]
        if not isinstance(body, dict) or not {"code", "message"} <= body.keys():
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return RemoteError(f"HTTP {response.status_code}: {response.text[:200]}",
                           status=response.status_code)
    error = errors.from_wire(response.status_code, body)
    if isinstance(error, errors.TryLater) and "retry-after" in response.headers:
        error.detail["retry_after"] = int(response.headers["retry-after"])
    return error


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise _error_of(response)


def _protocol_error(response: httpx.Response, problem: str) -> ProtocolError:
    request = response.request
    return ProtocolError(f"{request.method} {request.url} answered {response.status_code} "
                         f"with {problem}", url=str(request.url))


def _read(response: httpx.Response, parse: Callable[[Any], T], what: str) -> T:
    """A success's JSON body through ``parse``: an answer that is not JSON, or JSON that
    ``parse`` cannot read as ``what``, is a ProtocolError naming the URL."""
    try:
        body = response.json()
    except ValueError as exc:  # not JSON, or not UTF-8
        raise _protocol_error(response, f"a body that is not JSON: {response.text[:80]!r}"
                              ) from exc
    try:
        return parse(body)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _protocol_error(response, f"JSON that is not {what} "
                              f"({type(exc).__name__}: {exc})") from exc


def _submitted(body: Any) -> tuple[JobInfo, SubmitReason]:
    return JobInfo.from_dict(body), SubmitReason(body.get("submitted", "new"))


def _jobs(body: Any) -> list[JobInfo]:
    return [JobInfo.from_dict(job) for job in body["jobs"]]


def _functions(body: Any) -> list[dict[str, Any]]:
    functions = body["functions"]
    if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
        raise TypeError("'functions' is not a list of objects")
    return functions


def _status(body: Any) -> str:
    return str(body["status"])


def _event(job_id: str, sse: ServerSentEvent) -> Event:
    """One SSE message as an Event; raises ValueError, KeyError or TypeError when it is
    not genq's. A type this genq does not know stays a ``str`` (``models.event_type``)."""
    payload = json.loads(sse.data)
    data = payload["data"]
    if not isinstance(data, dict):
        raise TypeError(f"its data is {type(data).__name__}, not an object")
    return Event(job_id, int(sse.id), event_type(str(payload["type"])), data,
                 float(payload.get("ts", 0.0)))


class _Pools:
    """Several httpx clients that share the connection limits; each request goes to the
    least busy one.

    httpcore 1.0's connection pool re-scans all its connections, quadratically, when a
    request starts and when it ends, and polls every idle socket while at it: with one
    pool, 64 requests in flight cost ~4 ms of client CPU per request and more
    concurrency made ``map`` slower. Sixteen pools of a sixteenth of the connections each
    make that bookkeeping ~100 times cheaper. A request still waits for a connection only
    when every pool is full, i.e. at the same total limit; at low concurrency requests
    keep going to the first pool, so keep-alive reuse is unchanged.
    """

    def __init__(self, count: int, **options: Any) -> None:
        per = httpx.Limits(max_connections=-(-_MAX_CONNECTIONS // count),
                           max_keepalive_connections=-(-_MAX_KEEPALIVE // count))
        self.clients = [httpx.AsyncClient(limits=per, **options) for _ in range(count)]
        self._busy = [0] * count

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        busy = self._busy
        index = busy.index(min(busy))
        busy[index] += 1
        try:
            yield self.clients[index]
        finally:
            busy[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class HttpTransport:
    """A genq server as a ``Transport`` (genq.client.transport), for the owner of
    ``api_key``; ``transport`` is an httpx transport to send the requests through."""

    def __init__(self, url: str, *, api_key: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, stream_idle_timeout: float = 45.0,
                 retry_for: float = 120.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        headers = {"User-Agent": "genq-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.retry_for = retry_for
        self.stream_idle_timeout = stream_idle_timeout
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        # A transport passed in is one object: it is not shared between pools.
        self._pools = _Pools(1 if transport is not None else _POOLS, base_url=self.url,
                             headers=headers, transport=transport, timeout=self._timeout)

    async def aclose(self) -> None:
        await self._pools.aclose()

    async def _request(self, method: str, path: str, *, json_body: Any = None,
                       params: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None,
                       timeout: float | None = None) -> httpx.Response:
        """One call, retried on connection errors and 502/503/504 for ``retry_for`` s."""
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                with self._pools.lease() as http:
                    response = await http.request(
                        method, path, json=json_body, params=params, headers=headers,
                        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                    )
            except httpx.TransportError as exc:
                failure: str = f"{type(exc).__name__}: {exc}"
                cause: Exception = exc
                wait = _backoff(attempt)
            else:
                limited = _rate_limited(response)
                if response.status_code not in _RETRY_STATUSES and not limited:
                    _raise_for_error(response)
                    return response
                failure = f"HTTP {response.status_code}"
                # What the server said (store_unavailable...), for whoever looks further
                # than ConnectionLost: its __cause__.
                cause = _error_of(response)
                wait = _retry_after(response) or _backoff(attempt)
                if limited and time.monotonic() + wait > deadline:
                    raise cause  # genq.RateLimited, with its retry_after
            if time.monotonic() + wait > deadline:
                raise ConnectionLost(f"{method} {self.url}{path} failed for "
                                     f"{self.retry_for:.0f} s; last error: {failure}"
                                     ) from cause
            attempt += 1
            await anyio.sleep(wait)

    # -- the Transport -----------------------------------------------------------------
    async def submit(self, function: str, inputs: dict[str, Any], *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     webhook: str | None = None, webhook_events: Sequence[str] | None = None
                     ) -> tuple[JobInfo, SubmitReason]:
        body: dict[str, Any] = {"function": function, "input": inputs}
        if priority is not None:
            body["priority"] = priority
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events is not None:
            body["webhook_events"] = list(webhook_events)
        key = idempotency_key or uuid.uuid4().hex
        response = await self._request("POST", "/api/jobs", json_body=body,
                                       headers={"Idempotency-Key": key})
        return _read(response, _submitted, "a submitted job")

    async def get(self, job_id: str) -> JobInfo:
        response = await self._request("GET", f"/api/jobs/{job_id}")
        return _read(response, JobInfo.from_dict, "a job")

    async def cancel(self, job_id: str, *, ticket: str | None = None) -> JobInfo:
        response = await self._request("POST", f"/api/jobs/{job_id}/cancel",
                                       params=None if ticket is None else {"ticket": ticket})
        return _read(response, JobInfo.from_dict, "a job")

    async def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = _POLL_SLICE if deadline is None else min(
                _POLL_SLICE, max(0.0, deadline - time.monotonic()))
            response = await self._request("GET", f"/api/jobs/{job_id}/result",
                                           params={"wait": slice_}, timeout=slice_ + 10)
            if response.status_code == 200:
                return _read(response, JobInfo.from_dict, "a job")
            status = _read(response, _status, "a job")
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.ResultTimeout(
                    f"job {job_id} did not finish within {timeout} s "
                    f"(it is still {status})", job_id=job_id)

    async def result(self, job_id: str) -> Any:
        response = await self._request("GET", f"/api/jobs/{job_id}/result/value")
        return response.json()

    async def artifact(self, artifact_id: str) -> bytes:
        return (await self._request("GET", f"/api/artifacts/{artifact_id}")).content

    async def list_jobs(self, *, function: str | None = None,
                        status: str | JobStatus | None = None, limit: int = 50,
                        before: paging.Before = None) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("function", function),
                            ("status", None if status is None else str(status)),
                            ("before", paging.query_value(before))):
            if value is not None:
                params[name] = value
        response = await self._request("GET", "/api/jobs", params=params)
        return _read(response, _jobs, "a page of jobs")

    async def functions(self) -> list[dict[str, Any]]:
        response = await self._request("GET", "/api/functions")
        return _read(response, _functions, "the list of functions")

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """SSE, reopened from the last id seen whenever the connection drops."""
        last_id = after
        attempt = 0
        retry_hint: float | None = None
        failing_since: float | None = None
        while True:
            told_to_wait = 0.0
            cause: Exception | None = None
            try:
                async for event in self._sse_once(job_id, last_id):
                    if isinstance(event, float):
                        retry_hint = event
                        continue
                    attempt, failing_since = 0, None
                    if event.id <= last_id:
                        continue  # never deliver twice, whatever the server resends
                    last_id = event.id
                    yield [event]
                    if event.terminal:
                        return
                failure = "the stream ended before the job did"
            except (httpx.TransportError, _StreamIdle) as exc:
                failure, cause = f"{type(exc).__name__}: {exc}", exc
            except errors.RateLimited as exc:  # waits its turn, like any client
                failure, cause = str(exc), exc
                told_to_wait = float(exc.retry_after)
            except errors.GenqError as exc:
                if exc.status not in _RETRY_STATUSES:
                    raise
                failure, cause = str(exc), exc
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.retry_for:
                raise ConnectionLost(f"the event stream of job {job_id} could not be "
                                     f"resumed for {self.retry_for:.0f} s: {failure}"
                                     ) from cause
            await anyio.sleep(max(retry_hint or 0.0, _backoff(attempt), told_to_wait))
            attempt += 1

    async def _sse_once(self, job_id: str, after: int) -> AsyncIterator[Event | float]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if after:
            headers["Last-Event-ID"] = str(after)
        timeout = httpx.Timeout(self.stream_idle_timeout, connect=self._timeout.connect)
        with self._pools.lease() as http:
            # The response is closed in ``finally``, not by ``async with aconnect_sse``: a
            # stream left part way in a loop that ends (asyncio.run) has all its async
            # generators closed at once, and a context manager's generator closed from
            # here at the same time prints "aclose(): asynchronous generator is already
            # running" at exit.
            request = http.build_request("GET", f"/api/jobs/{job_id}/events",
                                         headers=headers, timeout=timeout)
            response = await http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    await response.aread()
                    _raise_for_error(response)  # a 502/503/504 is retried by ``follow``
                try:
                    async for sse in EventSource(response).aiter_sse():
                        if sse.retry is not None:
                            yield sse.retry / 1000
                        if not sse.id or not sse.data:
                            continue
                        try:
                            event = _event(job_id, sse)
                        except (KeyError, TypeError, ValueError) as exc:
                            raise _protocol_error(
                                response, f"an event that is not genq's (id {sse.id!r}: "
                                f"{type(exc).__name__}: {exc})") from exc
                        yield event
                except SSEError as exc:  # a 200 that is not an event stream
                    raise _protocol_error(response, str(exc)) from exc
                except httpx.ReadTimeout as exc:
                    raise _StreamIdle(f"no data or heartbeat for {self.stream_idle_timeout} s"
                                      ) from exc
            finally:
                await response.aclose()


class _StreamIdle(Exception):
    pass


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return min(60.0, float(value))
    return None
