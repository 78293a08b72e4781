"""The ``genq`` command: serve an app, run and watch jobs from a terminal.

Exit codes, for scripts: 0 success; 1 the job failed; 2 bad usage or invalid input;
3 unknown job or function; 4 the job was cancelled; 5 the job expired in the queue;
6 the server could not be reached; 7 the queue is full; 130 interrupted (Ctrl-C, after
asking the server to cancel the job).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from genq import errors
from genq.app import App
from genq.cli_waiting import WaitNotes
from genq.client import Artifact, Client, Job
from genq.client.attempts import AttemptWatch
from genq.engine import Engine
from genq.models import Event, EventType
from genq.serving.devices import DeviceUnavailable, check_available, parse_devices
from genq.store import Store, store_from_url, store_url
from genq.store.retention import describe_retain, parse_retain
from genq.store.urls import UNSET

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
EXIT_CANCELLED, EXIT_EXPIRED, EXIT_UNREACHABLE, EXIT_QUEUE_FULL, EXIT_INTERRUPTED = (
    4, 5, 6, 7, 130)
DEFAULT_URL = "http://127.0.0.1:7860"

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="genq: durable jobs for generative-AI apps.")
out = Console()
err = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", envvar="GENQ_URL",
                                        help="Server to talk to.")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="GENQ_API_KEY",
                                               help="API key for the server.")]
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="GENQ_STORE", help="Store URL: sqlite:///path or redis://host:port/db "
                                         "(default: --db, $GENQ_DB or .genq/genq.sqlite3).")]
DbOption = Annotated[Path | None, typer.Option(help="SQLite file; the same as "
                                                    "--store sqlite:///FILE.")]
DevicesOption = Annotated[str | None, typer.Option(
    "--devices", envvar="GENQ_DEVICES", metavar="DEVICES",
    help="Devices to run worker replicas on, comma-separated: cpu, cuda:0, cuda:1, mps. "
         "Each replica loads the app's models on its device and claims jobs on its own. "
         "Default: cpu.")]
ReplicasOption = Annotated[int, typer.Option(
    min=1, help="Worker replicas per device, each with its own copy of the models.")]
RetainOption = Annotated[str | None, typer.Option(
    "--retain", envvar="GENQ_RETAIN", metavar="DURATION",
    help="Delete finished jobs (with their events and artifacts) this long after they "
         "end: 30m, 12h, 7d, 2w; 0 or forever keeps every job (default: the store URL's "
         "retain, else 7d).")]
AllowedHostsOption = Annotated[str | None, typer.Option(
    "--allowed-hosts", envvar="GENQ_ALLOWED_HOSTS", metavar="NAMES",
    help="Host names the server answers to besides localhost, 127.x, [::1] and --host, "
         "comma-separated: genq.example.com, *.example.com, or * for any. Other Host "
         "headers get 403 host_not_allowed (a DNS-rebinding guard).")]
AllowedOriginsOption = Annotated[str | None, typer.Option(
    "--allowed-origins", envvar="GENQ_ALLOWED_ORIGINS", metavar="ORIGINS",
    help="Web pages (scheme://host[:port], comma-separated, or *) that may submit, cancel "
         "or change anything besides the server's own; requests from other pages get 403 "
         "origin_not_allowed. Requests without an Origin (curl, genq's clients) pass.")]


def load_app(target: str) -> App:
    """``module:attr`` or ``path/to/file.py:attr`` (attr defaults to ``app``)."""
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    sys.path.insert(0, os.getcwd())
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise typer.BadParameter(f"cannot load {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise typer.BadParameter(f"{target} is not a genq.App")
    return app


SERVE_HELP = (
    "Serve the API (and workers) for an app.\n\n"
    "API keys ($GENQ_API_KEYS or --api-keys-file): each entry is the key, verbatim, then "
    "options, e.g. 'q0Zb3kJx9u1mYc2LwQe7Hg== owner=alice admin'. The older 'KEY=OWNER' "
    "form is read only for a key without '='.\n\n"
    "Wrong keys: once an address has sent 10 wrong keys (then one a minute), its wrong "
    "keys are answered 429. A valid key is never refused, and a request without a key "
    "is not counted. The address is the connection's, or X-Forwarded-For's when the "
    "connection comes from a proxy named in --forwarded-allow-ips.")


@cli.command(help=SERVE_HELP)
def serve(
    app_target: Annotated[str, typer.Argument(metavar="APP", help="module:app to serve")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    store: StoreOption = None,
    db: DbOption = None,
    api_keys_file: Annotated[Path | None, typer.Option(
        help="File of API keys, one entry a line: the key verbatim as a generator prints "
             "it ('=' padding included), then options: owner=NAME, admin, rate=20/s, "
             "burst=40 (also $GENQ_API_KEYS, entries separated by commas). A key without "
             "owner= is owner key-<8 hex of its SHA-256>; max_queued=N and max_running=N "
             "are the owner's quotas. Empty or repeated keys are refused.")] = None,
    insecure_public: Annotated[bool, typer.Option(
        "--insecure-public", help="Allow a non-loopback address without API keys.")] = False,
    workers: Annotated[bool, typer.Option(
        help="Run workers in this process (--no-workers: only the API; `genq worker` "
             "processes run the jobs).")] = True,
    heartbeat: Annotated[float, typer.Option(help="Seconds between SSE heartbeats.")] = 15.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    retain: RetainOption = None,
    rate_limit: Annotated[str | None, typer.Option(
        "--rate-limit", envvar="GENQ_RATE_LIMIT", metavar="RATE",
        help="Requests each API key may make: 20/s, 600/min, 1000/h (bursts of one "
             "second's worth); a key's own rate= entry overrides it. Default: none.")] = None,
    owner_max_queued: Annotated[int | None, typer.Option(
        "--owner-max-queued", envvar="GENQ_OWNER_MAX_QUEUED", min=1, metavar="N",
        help="Queued jobs each owner may hold, over every function; past it a submission "
             "is answered 429 owner_quota. A key's own max_queued= overrides it. "
             "Default: none.")] = None,
    owner_max_running: Annotated[int | None, typer.Option(
        "--owner-max-running", envvar="GENQ_OWNER_MAX_RUNNING", min=1, metavar="N",
        help="Jobs of each owner running at once, across every worker; the rest wait "
             "while other owners' jobs run. A key's own max_running= overrides it. "
             "Default: none.")] = None,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        "--forwarded-allow-ips", envvar="GENQ_FORWARDED_ALLOW_IPS", metavar="ADDRESSES",
        help="Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: "
             "comma-separated addresses or networks, or '*'. Default: none, so every "
             "client is its connection's address.")] = None,
    allowed_hosts: AllowedHostsOption = None,
    allowed_origins: AllowedOriginsOption = None,
    header_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request's line and headers, from "
                      "connecting or the previous response; then 408 and closed.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request's body once its headers "
                      "are in; then 408 and closed.")] = 60.0,
    max_connections_per_client: Annotated[int, typer.Option(
        min=0, help="Connections one client address (IPv6: one /64) may hold open, event "
                    "streams included; more are refused with 429. 0: no cap (behind a "
                    "reverse proxy, whose address every connection has).")] = 256,
    devices: DevicesOption = None,
    replicas: ReplicasOption = 1,
    webhook_secret: Annotated[str | None, typer.Option(
        "--webhook-secret", envvar="GENQ_WEBHOOK_SECRET", metavar="SECRET",
        help="Signs webhook deliveries: whsec_ + base64 of 24-64 random bytes "
             "(docs/webhooks.md).")] = None,
) -> None:
    """Serve the API (and workers) for an app."""
    run_server(load_app(app_target), host=host, port=port, store=_store_url(store, db),
               api_keys_file=api_keys_file, insecure_public=insecure_public,
               workers=workers, heartbeat=heartbeat, log_level=log_level, retain=retain,
               rate_limit=rate_limit, forwarded_allow_ips=forwarded_allow_ips,
               quota=(owner_max_queued, owner_max_running),
               allowed_hosts=allowed_hosts, allowed_origins=allowed_origins, limits=(
                   header_timeout, body_timeout, max_connections_per_client),
               devices=_devices(devices, replicas) if workers else None,
               webhook_secret=webhook_secret)


@cli.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    store: StoreOption = None,
    db: DbOption = None,
    allowed_hosts: AllowedHostsOption = None,
    allowed_origins: AllowedOriginsOption = None,
) -> None:
    """Serve the demo app (image rendering with progress, streaming text)."""
    try:
        from genq.demo import app
    except ModuleNotFoundError as exc:  # the demo's own dependencies are an extra
        err.print(f"[red]the demo needs {exc.name}[/red]: pip install 'genq[demo]'")
        raise typer.Exit(EXIT_USAGE) from None

    run_server(app, host=host, port=port, store=_store_url(store, db), api_keys_file=None,
               insecure_public=False, workers=True, heartbeat=15.0, log_level="info",
               allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)


def _devices(devices: str | None, replicas: int) -> list[str]:
    """The device of each worker replica, or exit with the reason a device is refused."""
    try:
        chosen = parse_devices(devices, replicas)
        check_available(chosen)
    except DeviceUnavailable as exc:
        raise typer.BadParameter(str(exc), param_hint="--devices") from None
    return chosen


def _store_url(store: str | None, db: Path | None) -> str:
    """--db (a SQLite file) if given, else --store / $GENQ_STORE, else the default."""
    return store_url(db or store)


def _open_store(url: str, retain: str | None = None) -> Store:
    """The store of ``url``; ``retain`` (--retain) overrides the URL's own window."""
    try:
        window = UNSET if retain is None else parse_retain(retain)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retain") from None
    try:
        return store_from_url(url, retain=window)
    except (ValueError, ImportError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None


@cli.command()
def worker(
    app_target: Annotated[str, typer.Argument(metavar="APP", help="module:app to run")],
    store: StoreOption = None,
    db: DbOption = None,
    functions: Annotated[str | None, typer.Option(
        help="Comma-separated functions to run (default: all of the app's).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Jobs of each function at once in this process (default: each "
                    "function's own `concurrency`).")] = None,
    lease: Annotated[float, typer.Option(
        min=1.0, help="Seconds a claimed job is held without renewal before any worker "
                      "may take it over.")] = 30.0,
    shutdown_grace: Annotated[float, typer.Option(
        help="Seconds running jobs get to finish on SIGTERM/Ctrl-C before they go back "
             "to the queue.")] = 10.0,
    retain: RetainOption = None,
    devices: DevicesOption = None,
    replicas: ReplicasOption = 1,
) -> None:
    """Run an app's jobs from a shared store (Redis), without serving HTTP."""
    app = load_app(app_target)
    names = None if functions is None else [f.strip() for f in functions.split(",")
                                            if f.strip()]
    for name in names or []:
        if name not in app.functions:
            raise typer.BadParameter(f"no function named {name!r} (known: "
                                     f"{', '.join(sorted(app.functions))})",
                                     param_hint="--functions")
    replica_devices = _devices(devices, replicas)
    url = _store_url(store, db)
    opened = _open_store(url, retain)
    engine = Engine(app, opened, functions=names, concurrency=concurrency,
                    lease=lease, shutdown_grace=shutdown_grace, devices=replica_devices)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for replica in engine.workers:
        err.print(f"genq worker {replica.id}: {', '.join(names or app.functions)} "
                  f"on {replica.device} from {_redacted(url)}, keeping finished jobs "
                  f"{describe_retain(opened.retain)}")
    try:
        anyio.run(_run_until_signalled, engine)
    except* (errors.StoreUnavailable, errors.StoreLocked) as group:
        first = group.exceptions[0]
        message = first.message if isinstance(first, errors.GenqError) else str(first)
        err.print(f"[red]cannot open the store[/red]: {message}")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    err.print(f"genq worker {', '.join(w.id for w in engine.workers)}: stopped")


async def _run_until_signalled(engine: Engine) -> None:
    """Serve until SIGINT or SIGTERM, then drain: running jobs get the grace period,
    then go back to the queue (no accepted work is lost)."""
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await engine.stop()


def _redacted(url: str) -> str:
    """The store URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def run_server(app: App, *, host: str, port: int, store: str,
               api_keys_file: Path | None, insecure_public: bool, workers: bool,
               heartbeat: float, log_level: str, retain: str | None = None,
               rate_limit: str | None = None, forwarded_allow_ips: str | None = None,
               allowed_hosts: str | None = None, allowed_origins: str | None = None,
               limits: tuple[float, float, int] | None = None,
               devices: list[str] | None = None, webhook_secret: str | None = None,
               quota: tuple[int | None, int | None] = (None, None)) -> None:
    """``limits``: header timeout, body timeout and connections per client address
    (default: ``ConnectionLimits()``); ``devices``: one worker replica each; ``quota``:
    each owner's max queued and max running jobs, unless its key says."""
    # Imported here, not at the top: the client commands (run, watch, jobs...) then never
    # load uvicorn and Starlette.
    from genq.server import ApiKeys, ServerSettings
    from genq.server.connections import ConnectionLimits
    from genq.server.ratelimit import Rate
    from genq.server.run import ExposureRefused, check_exposure, serve
    from genq.server.security import Exposure
    from genq.store.base import Quota

    try:
        keys = ApiKeys.from_env(api_keys_file)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="GENQ_API_KEYS / --api-keys-file"
                                 ) from None
    try:
        rate = None if rate_limit is None else Rate.parse(rate_limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate-limit") from None
    try:
        check_exposure(host, keys, insecure_public)
    except ExposureRefused as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        exposure = Exposure(hosts=_names(allowed_hosts), origins=_names(allowed_origins))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--allowed-origins") from None
    from genq.webhooks.settings import WebhookSettings

    try:
        webhooks = WebhookSettings.from_env(secret=webhook_secret)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--webhook-secret / GENQ_WEBHOOK_*"
                                 ) from None
    settings = ServerSettings(
        heartbeat=heartbeat, workers=workers, keys=keys, rate_limit=rate, exposure=exposure,
        quota=Quota(*quota),
        limits=ConnectionLimits() if limits is None else ConnectionLimits(*limits),
        devices=devices or ["cpu"], webhooks=webhooks)
    opened = _open_store(store, retain)
    err.print(f"genq: serving {len(app.functions)} functions from {_redacted(store)} on "
              f"http://{host}:{port}" + (
                  f", keeping finished jobs {describe_retain(opened.retain)}" if workers
                  else " (no workers here: `genq worker` processes delete old jobs)"))
    serve(app, opened, settings, host=host, port=port, log_level=log_level,
          forwarded_allow_ips=forwarded_allow_ips)


def _names(listed: str | None) -> tuple[str, ...]:
    """A comma-separated option as its entries."""
    return tuple(name.strip() for name in (listed or "").split(",") if name.strip())


# -- talking to jobs ------------------------------------------------------------------
def parse_inputs(args: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``--name value`` pairs typed by the input schema (JSON for non-string fields)."""
    props: dict[str, Any] = schema.get("properties", {})
    inputs: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise typer.BadParameter(f"expected --name value, got {arg!r}")
        name = arg[2:].replace("-", "_")
        if "=" in name:
            name, raw = name.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw = args[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        if props.get(name, {}).get("type") == "string":
            inputs[name] = raw
        else:
            try:
                inputs[name] = json.loads(raw)
            except ValueError:
                inputs[name] = raw
    return inputs


@contextmanager
def _client(url: str, api_key: str | None, app_target: str | None,
            store: str) -> Iterator[tuple[Client, dict[str, dict[str, Any]]]]:
    """A local engine when an app is named, else the server at ``url``; plus schemas."""
    if app_target is not None:
        app = load_app(app_target)
        with app.local(store) as local:
            yield local, {n: s.input_schema() for n, s in app.functions.items()}
        return
    with Client(url, api_key=api_key, retry_for=10.0) as remote:
        schemas = {f["name"]: f["input_schema"] for f in remote.functions()}
        yield remote, schemas


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn genq errors into a message on stderr and a documented exit code."""
    try:
        yield
    except errors.InvalidInput as exc:
        err.print(f"[red]invalid input[/red]: {exc.message}")
        raise typer.Exit(EXIT_USAGE) from None
    except (errors.UnknownFunction, errors.JobNotFound) as exc:
        err.print(f"[red]not found[/red]: {exc.message}")
        raise typer.Exit(EXIT_NOT_FOUND) from None
    except errors.QueueFull as exc:
        err.print(f"[yellow]queue full[/yellow]: {exc.message} (retry in {exc.retry_after} s)")
        raise typer.Exit(EXIT_QUEUE_FULL) from None
    except errors.OwnerQuota as exc:  # like a full queue: the same "try later" exit
        err.print(f"[yellow]over quota[/yellow]: {exc.message} (retry in {exc.retry_after} s)")
        raise typer.Exit(EXIT_QUEUE_FULL) from None
    except errors.ConnectionLost as exc:
        err.print(f"[red]server unreachable[/red]: {exc.message}")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except errors.GenqError as exc:
        err.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(EXIT_FAILED) from None


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="[APP] FUNCTION", help="module:app and function, or only the function "
                                       "with --url")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    store: StoreOption = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file when running an APP "
                                                 "locally.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Save a binary result here.")] = None,
    priority: Annotated[int | None, typer.Option(help="Job priority.")] = None,
    webhook: Annotated[str | None, typer.Option(
        help="A URL the server posts the job's job.completed event to, signed "
             "(docs/webhooks.md).")] = None,
) -> None:
    """Submit a job (inputs as --name value) and follow it to the end."""
    extra = list(ctx.args)
    if extra and not extra[0].startswith("--"):
        app_target, function = target, extra.pop(0)
    else:
        app_target, function = None, target
    with _exit_codes(), _client(url, api_key, app_target, _store_url(store, db)) as (
            client, schemas):
        if function not in schemas:
            raise errors.UnknownFunction(f"no function named {function!r} (known: "
                                         f"{', '.join(sorted(schemas)) or 'none'})")
        inputs = parse_inputs(extra, schemas[function])
        job = client.submit(function, inputs, priority=priority, webhook=webhook)
        err.print(f"[dim]job {job.id}[/dim]")
        raise typer.Exit(_follow(client, job, output))


@cli.command()
def watch(job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
          output: Annotated[Path | None, typer.Option("--output", "-o")] = None) -> None:
    """Follow a job's events from the beginning until it ends."""
    with _exit_codes(), Client(url, api_key=api_key, retry_for=10.0) as client:
        raise typer.Exit(_follow(client, client.job(job_id), output))


@cli.command()
def result(job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
           output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
           wait: Annotated[float | None, typer.Option(help="Seconds to wait.")] = None) -> None:
    """Print (or save with -o) a job's result, waiting for it if needed."""
    with _exit_codes(), Client(url, api_key=api_key, retry_for=10.0) as client:
        raise typer.Exit(_print_result(client.job(job_id), output, wait))


@cli.command()
def cancel(job_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Cancel a queued or running job."""
    with _exit_codes(), Client(url, api_key=api_key, retry_for=10.0) as client:
        job = client.cancel(job_id)
        out.print(f"{job.id} {job.status.value}"
                  + (" (cancellation requested)" if job.status.value == "running" else ""))


@cli.command()
def jobs(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
         function: Annotated[str | None, typer.Option(help="Only this function.")] = None,
         status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
         limit: Annotated[int, typer.Option(help="How many.")] = 20) -> None:
    """List your most recent jobs."""
    with _exit_codes(), Client(url, api_key=api_key, retry_for=10.0) as client:
        table = Table("id", "function", "status", "attempts", "created")
        for job in client.list_jobs(function=function, status=status, limit=limit):
            created = dt.datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(job.id, job.function, job.status.value, str(job.attempts), created)
        out.print(table)


# Events ``_render`` notes on stderr with a line of their own.
_NOTED = frozenset({EventType.QUEUED, EventType.STARTED, EventType.LOG, EventType.RETRYING})


def _follow(client: Client, job: Job, output: Path | None) -> int:
    """Render events live; Ctrl-C cancels the job. Returns the exit code."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                   console=err, transient=True)
    task: TaskID | None = None
    streamed = mid_line = False
    attempts = AttemptWatch()
    # Why it is still queued (a model loading...), until it starts.
    notes = WaitNotes(job, lambda m: err.print(f"[yellow]{m}[/yellow]", highlight=False))
    try:
        with bar:
            notes.start()
            for event in job.events():
                if event.type is EventType.STARTED or event.terminal:
                    notes.stop()
                if mid_line and event.type in _NOTED:
                    err.print()  # a note on stderr starts a line, not after the text
                    mid_line = False
                if (restart := attempts.see(event)) is not None:
                    # stdout cannot take back the lost run's text: say where it ends
                    err.print(f"[yellow]{restart.notice}[/yellow]", highlight=False)
                task, wrote = _render(event, bar, task)
                if wrote:
                    streamed, mid_line = True, not event.data["chunk"].endswith("\n")
        notes.stop()
        if streamed:
            out.print()
        return _print_result(job, output, None, quiet=streamed)
    except KeyboardInterrupt:
        notes.stop()
        err.print(f"\n[yellow]interrupted: cancelling job {job.id}[/yellow]")
        try:
            client.cancel(job.id)
        except errors.GenqError as exc:
            err.print(f"[red]could not cancel[/red]: {exc.message}")
        return EXIT_INTERRUPTED
    finally:
        notes.stop()  # also when the stream raised (a lost server)


def _render(event: Event, bar: Progress, task: TaskID | None) -> tuple[TaskID | None, bool]:
    data = event.data
    if event.type is EventType.QUEUED:
        err.print(f"[dim]queued, position {data.get('position')}[/dim]")
    elif event.type is EventType.STARTED:
        err.print(f"[dim]started (attempt {data.get('attempt')})[/dim]")
    elif event.type is EventType.PROGRESS:
        total = data.get("total") or 1.0
        done = data.get("current") if data.get("total") else (data.get("fraction") or 0.0)
        desc = data.get("description") or "working"
        if task is None:
            task = bar.add_task(desc, total=total)
        bar.update(task, completed=done, total=total, description=desc)
    elif event.type is EventType.OUTPUT:
        chunk = data.get("chunk")
        if isinstance(chunk, str):
            out.file.write(chunk)
            out.file.flush()
            return task, True
        out.print_json(json.dumps(chunk))
    elif event.type is EventType.LOG:
        err.print(f"[dim]{data.get('level', 'info')}: {data.get('message')}[/dim]")
    elif event.type is EventType.RETRYING:
        reason = data.get("reason") or (data.get("error") or {}).get("message", "")
        err.print(f"[yellow]retrying (attempt {data.get('next_attempt')}) in "
                  f"{data.get('delay')} s: {reason}[/yellow]")
    return task, False


def _print_result(job: Job, output: Path | None, wait: float | None,
                  quiet: bool = False) -> int:
    try:
        value = job.result(timeout=wait)
    except errors.JobFailed as exc:
        error = exc.detail.get("error", {})
        err.print(f"[red]failed[/red]: {error.get('type')}: {error.get('message')}")
        return EXIT_FAILED
    except errors.JobCancelled:
        err.print("[yellow]cancelled[/yellow]")
        return EXIT_CANCELLED
    except errors.JobExpired:
        err.print("[yellow]expired in the queue[/yellow]")
        return EXIT_EXPIRED
    if isinstance(value, Artifact):
        target = output or Path(value.name)
        value.save(target)
        err.print(f"saved {value.content_type} ({len(value.data)} bytes) to {target}")
    elif not quiet:
        out.print_json(json.dumps(value)) if not isinstance(value, str) else out.print(value)
    return EXIT_OK


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
