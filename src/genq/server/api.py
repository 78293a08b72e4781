"""The REST + SSE API: a Starlette app over the engine's job service, with in-process
workers unless they run elsewhere (``genq serve --no-workers`` + ``genq worker``).

Every error a caller can cause is answered with JSON ``{"error": {"code", "message",
...}}`` and the status of its ``GenqError`` class; see docs/api.md for the table.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from genq import paging
from genq.app import App
from genq.engine import Engine, JobService
from genq.errors import (
    BadRequest,
    Forbidden,
    GenqError,
    NotReady,
    StoreUnavailable,
    TryLater,
    Unauthorized,
)
from genq.jsoncodec import compact_json
from genq.metrics import Metrics
from genq.models import Event, Job, JobInfo, JobStatus
from genq.readiness import READY, cluster_readiness
from genq.server.auth import ApiKeys, Caller, presented_key
from genq.server.caller import authenticate, read_json_body, server_state
from genq.server.connections import BodyDeadline, ConnectionLimits
from genq.server.dashboard import Activity, JobFeed
from genq.server.openai import openai_routes
from genq.server.openapi import openapi_document
from genq.server.ratelimit import Rate, RateLimiter
from genq.server.security import Exposure, ExposureGuard, SecureStarlette, artifact_headers
from genq.server.sessions import SESSION_COOKIE, SESSION_SECONDS
from genq.server.streams import counted_stream
from genq.server.ui import ui_routes
from genq.store.base import PAGE_BYTES, Quota, Store
from genq.webhooks.sender import WebhookSender
from genq.webhooks.settings import WebhookSettings
from genq.webhooks.target import webhook_target

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB of JSON input per submission
MAX_EVENT_ID = (1 << 63) - 1  # event ids are SQLite INTEGERs and Redis stream ids
# Wrong API keys a client address may present before its wrong keys are answered 429:
# ten, then one a minute. A valid key is always let in (its check comes first).
READY_TIMEOUT = 1.0  # seconds /readyz waits for the store before answering 503
_TICKET = re.compile(r"[0-9a-f]{32}")  # what JobService.submit gives a submission


@dataclass
class ServerSettings:
    heartbeat: float = 15.0  # seconds between SSE comment lines on an idle stream
    retry_ms: int = 1000  # the SSE ``retry:`` hint sent to clients
    max_body: int = DEFAULT_MAX_BODY
    workers: bool = True
    shutdown_grace: float = 10.0
    keys: ApiKeys = field(default_factory=ApiKeys)
    rate_limit: Rate | None = None  # requests per API key, unless its entry says otherwise
    quota: Quota = field(default_factory=Quota)  # per owner, unless its key says otherwise
    exposure: Exposure = field(default_factory=Exposure)  # Host names and origins let in
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    devices: list[str] = field(default_factory=lambda: ["cpu"])  # a worker replica each
    # The secret, retry period and receiver addresses of webhooks; None: $GENQ_WEBHOOK_*.
    webhooks: WebhookSettings | None = None


@dataclass
class ServerState:
    app: App
    store: Store
    settings: ServerSettings
    metrics: Metrics
    engine: Engine
    sender: WebhookSender
    feed: JobFeed = field(default_factory=JobFeed)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    streams_by_owner: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.time)
    activity: Activity = field(init=False)  # the dashboard's figures, read from the store

    def __post_init__(self) -> None:
        self.activity = Activity(self.store)

    @property
    def jobs(self) -> JobService:
        return self.engine.jobs

    def quota(self, caller: Caller) -> Quota:
        """The quotas the caller's jobs are submitted under: its key's, else the
        server's (docs/sharing.md)."""
        return caller.quota.over(self.settings.quota)

    def on_job_changed(self, job: Job) -> None:
        """One feed of durable status changes serves the metrics and the dashboard's
        live list, whoever ended the job (a worker, a cancel, an expiry)."""
        if job.status.terminal:
            self.metrics.job_done(job)
        self.feed.publish(job)


def create_server(app: App, store: Store, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app. Its lifespan opens the store and runs the workers."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    engine = Engine(app, store, workers=settings.workers, devices=settings.devices,
                    shutdown_grace=settings.shutdown_grace, on_loop_block=metrics.loop_block)
    if settings.webhooks is None:
        settings = replace(settings, webhooks=WebhookSettings.from_env())
    assert settings.webhooks is not None
    hooks = settings.webhooks
    sender = WebhookSender(store, hooks, lambda ref: (
        hooks.secret if not ref else settings.keys.webhook_secret(ref)))
    state = ServerState(app, store, settings, metrics, engine, sender)
    store.subscribe_jobs(state.on_job_changed)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(engine.serve)
            await tg.start(sender.run)
            try:
                yield
            finally:
                sender.stop()  # pending deliveries wait in the store
                with anyio.CancelScope(shield=True):
                    await engine.stop()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi_endpoint),
        Route("/api/functions", list_functions),
        Route("/api/functions/{name}", get_function),
        Route("/api/jobs", jobs_collection, methods=["GET", "POST"]),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/result", job_result),
        Route("/api/jobs/{job_id}/result/value", job_result_value),
        Route("/api/jobs/{job_id}/events", job_events),
        Route("/api/jobs/{job_id}/webhooks", job_webhooks),
        Route("/api/artifacts/{artifact_id}", get_artifact),
        Route("/api/events", all_events),
        Route("/api/stats", stats),
        Route("/api/session", session, methods=["POST", "DELETE"]),
    ]
    routes += ui_routes()
    routes += openai_routes()
    middleware = [Middleware(ExposureGuard, exposure=settings.exposure),
                  Middleware(BodyDeadline, timeout=settings.limits.body_timeout)]
    server = SecureStarlette(routes=routes, lifespan=lifespan, middleware=middleware,
                             exception_handlers={GenqError: genq_error_handler,
                                                 HTTPException: http_error_handler})
    server.state.genq = state
    return server



def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(compact_json(data), status,
                    headers=headers, media_type="application/json")


async def genq_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GenqError)
    headers = {}
    if isinstance(exc, TryLater | StoreUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return _json({"error": exc.to_dict()}, exc.status, headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # Starlette's own headers, such as the Allow list a 405 must carry (RFC 9110).
    return _json({"error": {"code": code, "message": exc.detail}}, exc.status_code,
                 dict(exc.headers or {}))


def _caller(request: Request) -> tuple[ServerState, str]:
    """The server state and the owner the request's API key stands for."""
    state, caller = authenticate(request)
    return state, caller.owner



def _admin(request: Request, what: str) -> ServerState:
    state, caller = authenticate(request)
    if not caller.admin:
        raise Forbidden(f"{what} covers every owner's jobs: it needs an admin API key "
                        "('KEY owner=NAME admin' in GENQ_API_KEYS)")
    return state


async def session(request: Request) -> Response:
    """POST /api/session: trade the key (in a header, never the URL) for the UI's session
    cookie, so EventSource, image and download URLs carry no key (server/sessions.py).
    DELETE /api/session: drop the cookie (the UI's "Forget key")."""
    if request.method == "DELETE":
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="strict")
        return response
    keys = server_state(request).settings.keys
    if keys.enabled and not (request.headers.get("authorization")
                             or request.headers.get("x-api-key")):
        raise Unauthorized("POST /api/session takes the API key in the Authorization "
                           "header ('Bearer KEY'), not in the URL")
    _, caller = authenticate(request)
    if not keys.enabled:
        return _json({"owner": caller.owner, "admin": caller.admin, "expires_at": None})
    token, expires = keys.sessions.issue(caller.key_id)
    response = _json({"owner": caller.owner, "admin": caller.admin, "expires_at": expires})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, path="/api",
                        secure=request.url.scheme == "https", httponly=True,
                        samesite="strict")
    return response


async def _job_view(state: ServerState, job: Job) -> dict[str, Any]:
    return JobInfo.from_job(job, await state.jobs.queue_position(job),
                            await state.jobs.waiting(job)).to_dict()


# -- endpoints ---------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Nothing is read from the store, so it answers at
    once even while the store is down (that is ``/readyz``'s to say)."""
    return _json({"status": "ok", **_process_view(request)})


async def readyz(request: Request) -> Response:
    """Readiness: the store answered within READY_TIMEOUT s and reports no problem, and
    every function of the app has a live worker ready to run it (200); else 503:
    ``store_unavailable`` naming the store's problem, or ``not_ready`` naming the
    functions without a ready worker and why (loading, failed, no worker).

    Either way the answer gives ``functions``: per function its state and how many
    workers are ready, loading or failed for it (genq.readiness), for anyone, since a
    probe needs no key; the model, seconds so far, error and next try, and the cluster
    figures (workers and running jobs on every machine), only to whoever may see
    ``/healthz``'s figures (an error can name paths and hosts)."""
    state = server_state(request)
    if (problem := state.store.problem()) is not None:  # a full disk, a lost file
        raise StoreUnavailable(problem, store=state.store.kind, problem=problem)
    cluster = None
    with anyio.move_on_after(READY_TIMEOUT), contextlib.suppress(StoreUnavailable):
        cluster = await state.engine.cluster(queue_depths=False)
    if cluster is None:
        raise StoreUnavailable(f"the {state.store.kind} store did not answer within "
                               f"{READY_TIMEOUT:g} s", store=state.store.kind)
    view = _process_view(request)
    if view:
        view.update(workers=len(cluster.workers), running=sum(cluster.running.values()))
    readiness = cluster_readiness(state.app.functions, cluster.workers)
    view["functions"] = {name: r.to_dict(detail=bool(view)) for name, r in readiness.items()}
    unready = [r for r in readiness.values() if r.state != READY]
    if unready:
        reasons = ", ".join(f"{r.function} ({r.state.replace('_', ' ')})" for r in unready)
        raise NotReady(f"not every function has a ready worker: {reasons}", **view)
    return _json({"status": "ready", **view})


def _process_view(request: Request) -> dict[str, Any]:
    """This process's figures (store kind, functions, its own worker), none read from the
    store; empty unless the caller may see how busy every owner keeps the cluster: an
    admin key, or any caller of a server without keys. Probes need no key."""
    state = server_state(request)
    if state.settings.keys.enabled and (presented_key(request) is None
                                        or not authenticate(request)[1].admin):
        return {}
    workers = state.engine.workers
    return {"store": state.store.kind, "functions": len(state.app.functions),
            "worker": None if not workers else
            {"id": workers[0].id, "running": sum(len(w.active_jobs) for w in workers),
             "replicas": [{"id": w.id, "device": w.device, "running": len(w.active_jobs)}
                          for w in workers]}}


async def metrics_endpoint(request: Request) -> Response:
    state = _admin(request, "/metrics")
    cluster = await state.engine.cluster()
    for name, depth in cluster.queue_depths.items():
        state.metrics.queue_depth.labels(name).set(depth)
        state.metrics.running.labels(name).set(cluster.running.get(name, 0))
    state.metrics.workers.set(len(cluster.workers))
    state.metrics.observe_workers(state.app.functions, cluster.workers)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi_endpoint(request: Request) -> Response:
    return _json(openapi_document(server_state(request).app))


async def list_functions(request: Request) -> Response:
    state, _ = _caller(request)
    return _json({"functions": [spec.describe() for spec in state.app.functions.values()]})


async def get_function(request: Request) -> Response:
    state, _ = _caller(request)
    return _json(state.app.get_function(request.path_params["name"]).describe())



async def jobs_collection(request: Request) -> Response:
    """/api/jobs: one route for both methods, so a 405 lists both in its Allow header
    (with a route per method, Starlette names only the first one's)."""
    return await (submit_job(request) if request.method == "POST" else list_jobs(request))


async def submit_job(request: Request) -> Response:
    """POST /api/jobs {"function": name, "input": {...}, "priority": n, "webhook": url,
    "webhook_events": [...]}."""
    state, caller = authenticate(request)
    body = await read_json_body(request, state.settings.max_body)
    if not isinstance(body, dict) or not isinstance(body.get("function"), str):
        raise BadRequest('the body must be an object {"function": name, "input": {...}}')
    function = body["function"]
    inputs = body.get("input", {})
    priority = body.get("priority")
    if not isinstance(inputs, dict):
        raise BadRequest('"input" must be an object of parameter values')
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise BadRequest('"priority" must be an integer', field="priority")
    target, secret = None, ""
    if body.get("webhook") is not None or body.get("webhook_events") is not None:
        hooks = state.sender.settings
        target = webhook_target(body.get("webhook"), body.get("webhook_events"), hooks.policy)
        if caller.webhook_secret is not None:
            secret = caller.key_id
        elif hooks.secret is None:
            raise BadRequest("this server has no webhook secret to sign deliveries with: "
                             "start it with --webhook-secret or $GENQ_WEBHOOK_SECRET "
                             "(whsec_...), or give the API key a webhook_secret=",
                             field="webhook")
    try:
        submitted = await state.jobs.submit(
            caller.owner, function, inputs, priority=priority,
            idempotency_key=request.headers.get("idempotency-key"), quota=state.quota(caller))
    except GenqError as exc:
        if function in state.app.functions:
            state.metrics.rejected.labels(function, exc.code).inc()
        raise
    if submitted.created:
        state.metrics.submitted.labels(function).inc()
    if target is not None:
        await state.sender.subscribe(submitted.job, target, secret)
    view = await _job_view(state, submitted.job)
    view["ticket"] = submitted.ticket
    view["submitted"] = submitted.reason.value
    return _json(view, 201 if submitted.created else 200,
                 {"Location": f"/api/jobs/{submitted.job.id}"})


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}",
                         field=name)
    return value


async def list_jobs(request: Request) -> Response:
    """GET /api/jobs?function=&status=&limit=&before= (newest first; ``next`` pages).

    ``before`` is the previous page's ``next`` (``"<created_at>:<id>"``, genq.paging) or,
    as before cursors existed, a plain timestamp."""
    state, owner = _caller(request)
    q = request.query_params
    status = None
    if q.get("status"):
        try:
            status = JobStatus(q["status"])
        except ValueError:
            raise BadRequest(f"unknown status {q['status']!r}; one of "
                             + ", ".join(s.value for s in JobStatus), field="status") from None
    limit = _int_param(request, "limit", 50, 1, 500)
    before, before_id = None, None
    if q.get("before"):
        try:  # nan: no rows on SQLite, an error on Redis; so refused, like inf
            before, before_id = paging.parse(q["before"])
        except ValueError as exc:
            raise BadRequest(f"query parameter 'before' {exc}", field="before") from None
    jobs = await state.jobs.list_jobs(owner, function=q.get("function") or None, status=status,
                                 limit=limit, before=before, before_id=before_id)
    views = [await _job_view(state, j) for j in jobs]
    cursor = paging.cursor(jobs[-1]) if len(jobs) == limit else None
    return _json({"jobs": views, "next": cursor})


async def get_job(request: Request) -> Response:
    state, owner = _caller(request)
    job = await state.jobs.get(owner, request.path_params["job_id"])
    return _json(await _job_view(state, job))


async def cancel_job(request: Request) -> Response:
    """POST /api/jobs/{id}/cancel[?ticket=T]: with the ticket a submission answered, only
    that submission lets go (the job is cancelled once none holds it); without, the job
    is cancelled whoever submitted it. The answer is the job view plus
    ``cancel_requested``."""
    state, owner = _caller(request)
    ticket = request.query_params.get("ticket")
    if ticket is not None and not _TICKET.fullmatch(ticket):
        raise BadRequest("query parameter 'ticket' must be the ticket a submission "
                         "answered (32 hex digits)", field="ticket")
    job = await state.jobs.cancel(owner, request.path_params["job_id"], ticket)
    # A running job asked to stop and one that goes on for other submissions both answer
    # "running": the flag tells them apart (the web UI says which).
    return _json({**await _job_view(state, job), "cancel_requested": job.cancel_requested})


async def job_result(request: Request) -> Response:
    """GET /api/jobs/{id}/result?wait=S: the job once terminal (200), else 202 after S s."""
    state, owner = _caller(request)
    try:
        wait = float(request.query_params.get("wait", "0"))
    except ValueError:
        raise BadRequest("query parameter 'wait' must be a number of seconds",
                         field="wait") from None
    job = await state.jobs.settled(owner, request.path_params["job_id"], wait)
    view = await _job_view(state, job)
    return _json(view, 200 if job.status.terminal else 202)


async def job_result_value(request: Request) -> Response:
    """GET /api/jobs/{id}/result/value: a succeeded job's result as JSON, however large,
    streamed in pieces read from the store a page at a time (the job view inlines only
    results up to 1 MiB and points here for larger ones)."""
    state, owner = _caller(request)
    pieces = await state.jobs.result_json(owner, request.path_params["job_id"])
    return StreamingResponse(pieces, media_type="application/json")


def _resume_point(request: Request) -> int:
    raw = (request.headers.get("last-event-id") or request.query_params.get("last_event_id")
           or request.query_params.get("after") or "0")
    try:
        after = max(0, int(raw))
    except ValueError:
        raise BadRequest("Last-Event-ID must be an event id (an integer)",
                         field="last_event_id") from None
    if after > MAX_EVENT_ID:  # past what either store can hold or compare
        raise BadRequest(f"Last-Event-ID must be at most {MAX_EVENT_ID}",
                         field="last_event_id")
    return after


async def job_events(request: Request) -> Response:
    """GET /api/jobs/{id}/events: SSE from Last-Event-ID on; ``?format=json`` for a page."""
    state, owner = _caller(request)
    job_id = request.path_params["job_id"]
    after = _resume_point(request)
    if request.query_params.get("format") == "json":
        limit = _int_param(request, "limit", 1000, 1, 10_000)
        events = await state.jobs.read_events(owner, job_id, after, limit)
        return _json({"events": [e.to_dict() for e in events]})
    await state.jobs.get(owner, job_id)  # a 404 before the stream starts, not inside it

    async def stream() -> AsyncIterator[bytes]:
        async for batch in state.jobs.follow(owner, job_id, after):
            for part in _by_bytes(batch):
                yield "".join(map(_sse_frame, part)).encode()

    return _native_stream(request, state, owner, stream())


async def job_webhooks(request: Request) -> Response:
    """GET /api/jobs/{id}/webhooks: the job's webhook, its pending delivery and every
    attempt (status, error, time), oldest first; ``{"webhook": null}`` without one."""
    state, owner = _caller(request)
    job = await state.jobs.get(owner, request.path_params["job_id"])
    return _json(await state.sender.report(job.id))


async def get_artifact(request: Request) -> Response:
    state, owner = _caller(request)
    ref, data = await state.jobs.artifact(owner, request.path_params["artifact_id"])
    # Untrusted bytes: HTML, SVG and the like only ever as a download (security.py).
    media_type, headers = artifact_headers(ref.content_type, ref.name)
    return Response(data, media_type=media_type, headers={
        **headers, "Cache-Control": "private, max-age=31536000, immutable",
    })


def _by_bytes(batch: list[Event]) -> Iterator[list[Event]]:
    """A batch (events committed together) goes out as one write rather than one per
    event, unless it is large: then in writes of about PAGE_BYTES of data each."""
    part: list[Event] = []
    size = 0
    for event in batch:
        if part and size + event.size > PAGE_BYTES:
            yield part
            part, size = [], 0
        part.append(event)
        size += event.size
    if part:
        yield part


def _sse_frame(event: Event) -> str:
    """One event as SSE text, byte for byte what ``ServerSentEvent(data, id=..., event=...)
    .encode()`` gives, built directly: the id is an integer, the type one word, and the
    JSON has no line breaks, so there is nothing to escape or split."""
    data = compact_json({"type": str(event.type), "data": event.data, "ts": event.ts})
    return f"id: {event.id}\r\nevent: {event.type}\r\ndata: {data}\r\n\r\n"


def _native_stream(request: Request, state: ServerState, owner: str,
                   frames: AsyncIterator[ServerSentEvent | bytes]) -> Response:
    """A native event stream: counted, and opened with the browser's reconnect delay."""
    return counted_stream(request, owner, frames,
                          first=ServerSentEvent(comment="genq", retry=state.settings.retry_ms))


async def all_events(request: Request) -> Response:
    """GET /api/events: SSE of status changes of all my jobs (for dashboards).

    Not resumable: it starts with a ``resync`` event, on which a client reloads the job
    list, then sends one ``job`` event per status change.
    """
    state, owner = _caller(request)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent("{}", event="resync")
        async for job in state.feed.follow(owner):
            view = JobInfo.from_job(job).to_dict()
            del view["queue_position"], view["waiting"]  # a feed looks up neither
            yield ServerSentEvent(compact_json(view), event="job")

    return _native_stream(request, state, owner, stream())


async def stats(request: Request) -> Response:
    """GET /api/stats: queue depth, running jobs, throughput, latency, failures, workers:
    the whole cluster (``Engine.cluster``), whichever front end answers.

    Throughput, latency, failures and stream counts are the caller's own unless the key
    is an admin's; queue depth, running jobs and workers are the shared capacity every
    caller waits for, as a queue position already shows."""
    state, caller = authenticate(request)
    mine = None if caller.admin else caller.owner
    cluster = await state.engine.cluster()
    activity = await state.activity.summaries(state.app.functions, owner=mine)
    functions = {}
    for name, spec in state.app.functions.items():
        functions[name] = {
            "queue_depth": cluster.queue_depths[name],
            "running": cluster.running.get(name, 0), "concurrency": spec.options.concurrency,
            **activity[name],
        }
    workers = [{**w.to_dict(), "healthy": True} for w in cluster.workers]
    return _json({"functions": functions, "workers": workers,
                  "streams": state.metrics.connected_streams if caller.admin
                  else state.streams_by_owner[caller.owner],
                  "uptime": time.time() - state.started_at})

