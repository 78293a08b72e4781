"""The ``genq`` command: serve an app, run and watch jobs from a terminal.

This module holds the commands that run an app (``serve``, ``worker``, ``demo``);
the job commands are in ``cli_jobs``, showing a job in ``cli_follow``, and the exit
codes, documented for scripts, in ``cli_common``.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import anyio
import typer

from genq import cli_jobs, errors
from genq.app import App
from genq.cli_common import (
    EXIT_CODES,
    EXIT_STORE_LOCKED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    StoreOption,
    chosen_store,
    err,
    load_app,
    store_locked,
)
from genq.engine import Engine
from genq.serving.devices import DeviceUnavailable, check_available, parse_devices
from genq.store import Store, store_from_url
from genq.store.retention import describe_retain, parse_retain
from genq.store.sqlite import SQLiteStore, lock_owner
from genq.store.urls import UNSET

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="genq: durable jobs for generative-AI apps.", epilog=EXIT_CODES)

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
    run_server(load_app(app_target), host=host, port=port, store=chosen_store(store, db),
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

    run_server(app, host=host, port=port, store=chosen_store(store, db), api_keys_file=None,
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


def _open_store(url: str, retain: str | None = None) -> Store:
    """The store of ``url``; ``retain`` (--retain) overrides the URL's own window."""
    try:
        window = UNSET if retain is None else parse_retain(retain)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retain") from None
    try:
        opened = store_from_url(url, retain=window)
    except (ValueError, ImportError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None
    # One process owns a SQLite file: a second one says so before it starts (its store
    # opens later, inside the server's start-up or the worker's loop).
    if isinstance(opened, SQLiteStore) and (pid := lock_owner(opened.path)) is not None:
        _exit_store_locked(pid)
    return opened


def _exit_store_locked(pid: object) -> None:
    err.print(f"[red]{store_locked(pid)}[/red]", highlight=False)
    raise typer.Exit(EXIT_STORE_LOCKED)


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
    url = chosen_store(store, db)
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
    except* errors.StoreLocked as group:  # taken since the check in _open_store
        locked = group.exceptions[0]
        _exit_store_locked(locked.detail.get("pid", "unknown")
                           if isinstance(locked, errors.StoreLocked) else "unknown")
    except* errors.StoreUnavailable as group:
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


# -- jobs (genq.cli_jobs) -------------------------------------------------------------
_JOB_COMMANDS = {"context_settings": {"allow_extra_args": True,
                                      "allow_interspersed_args": False}}
cli.command(**_JOB_COMMANDS)(cli_jobs.run)  # type: ignore[arg-type]
for _command in (cli_jobs.watch, cli_jobs.jobs, cli_jobs.cancel, cli_jobs.result):
    cli.command()(_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
