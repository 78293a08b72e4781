"""``genq run``, ``watch``, ``result``, ``cancel`` and ``jobs``: jobs from a terminal.

Function inputs and the command's own options never collide: everything after the
function name is an input (``--name value``, ``--name=value``, a bare ``--flag`` for
true, or ``-i name=value``), and the command's options go before it. So a function may
take an input called ``url``, ``output`` or ``server``. The server is ``--server`` (or
``$GENQ_URL``); ``--url`` before the function name is its deprecated spelling, which
says so on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from genq import errors
from genq.cli_common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_QUEUE_FULL,
    EXIT_STORE_LOCKED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    StoreOption,
    chosen_store,
    err,
    load_app,
    out,
    store_locked,
    terminal,
)
from genq.cli_connection import ServerClient
from genq.cli_follow import follow, print_result
from genq.client import Client

DEFAULT_SERVER = "http://127.0.0.1:7860"

ServerOption = Annotated[str, typer.Option(
    "--server", envvar="GENQ_URL", metavar="URL", help="The genq server to talk to.")]
OldUrlOption = Annotated[str | None, typer.Option(
    "--url", hidden=True, help="Deprecated: --server.")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="GENQ_API_KEY",
                                               help="API key for the server.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o",
                                                   help="Save a binary result here.")]

# ``genq run``'s own options, named in the answer to one given after the function name.
_RUN_OPTIONS = {"server", "url", "api_key", "store", "db", "output", "priority", "input"}
_RUN_USAGE = "genq run [OPTIONS] [APP] FUNCTION [--NAME VALUE]..."


def _server(server: str, old_url: str | None) -> str:
    if old_url is None:
        return server
    err.print("[yellow]--url is deprecated: use --server (or $GENQ_URL)[/yellow]",
              highlight=False)
    return old_url


def _say(message: str) -> None:
    terminal.note(f"[yellow]{message}[/yellow]")


def parse_inputs(function: str, args: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """The inputs after the function name: ``--name value``, ``--name=value``, a bare
    ``--flag`` (true) or ``-i name=value``; typed by the input schema (JSON for fields
    that are not strings)."""
    props: dict[str, Any] = schema.get("properties", {})
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-i":
            if i + 1 >= len(args) or "=" not in args[i + 1]:
                raise typer.BadParameter("-i takes name=value")
            name, raw = args[i + 1].split("=", 1)
            i += 2
        elif arg.startswith("--") and len(arg) > 2:
            name = arg[2:]
            if "=" in name:
                name, raw = name.split("=", 1)
                i += 1
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                raw = args[i + 1]
                i += 2
            else:
                raw = "true"
                i += 1
        elif arg.startswith("-"):
            raise typer.BadParameter(
                f"{arg} after the function name: genq run's options go before it "
                f"({_RUN_USAGE})")
        else:
            raise typer.BadParameter(f"expected --name value after the function name, "
                                     f"got {arg!r}")
        pairs.append((name.replace("-", "_"), raw))
    inputs: dict[str, Any] = {}
    for name, raw in pairs:
        if name not in props and name in _RUN_OPTIONS:
            raise typer.BadParameter(
                f"--{name.replace('_', '-')} is not an input of {function}: genq run's "
                f"options go before the function name ({_RUN_USAGE})")
        if props.get(name, {}).get("type") == "string":
            inputs[name] = raw
        else:
            try:
                inputs[name] = json.loads(raw)
            except ValueError:
                inputs[name] = raw
    return inputs


@contextmanager
def _reported(remote: ServerClient | None = None) -> Iterator[None]:
    """genq errors as one line on stderr and a documented exit code; ``remote``, the
    client whose answers may not have been genq's."""
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
    except errors.StoreLocked as exc:
        err.print(f"[red]{store_locked(exc.detail.get('pid', 'unknown'))}[/red]",
                  highlight=False)
        raise typer.Exit(EXIT_STORE_LOCKED) from None
    except errors.GenqError as exc:
        foreign = None if remote is None else remote.not_genq(exc)
        if foreign is not None:
            err.print(f"[red]{foreign}[/red]", highlight=False)
            raise typer.Exit(EXIT_UNREACHABLE) from None
        err.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(EXIT_FAILED) from None


@contextmanager
def _server_client(server: str, old_url: str | None, api_key: str | None
                   ) -> Iterator[ServerClient]:
    """A client of the server, its errors reported (``_reported``)."""
    with ServerClient(_server(server, old_url), api_key, _say) as client, _reported(client):
        yield client


def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="[APP] FUNCTION", help="module:app and function (run in this process), "
                                       "or only the function (run by --server)")],
    server: ServerOption = DEFAULT_SERVER,
    old_url: OldUrlOption = None,
    api_key: KeyOption = None,
    store: StoreOption = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file when running an APP "
                                                 "locally.")] = None,
    output: OutputOption = None,
    priority: Annotated[int | None, typer.Option(help="Job priority.")] = None,
    given: Annotated[list[str] | None, typer.Option(
        "--input", "-i", metavar="NAME=VALUE",
        help="An input, before the function name (repeat for more); after it, inputs "
             "are --name value or -i name=value.")] = None,
    webhook: Annotated[str | None, typer.Option(
        help="A URL the server posts the job's job.completed event to, signed "
             "(docs/webhooks.md).")] = None,
) -> None:
    """Submit a job and follow it to the end; Ctrl-C cancels it.

    Options go before the function name, inputs after it: genq run --server URL
    download_model --url https://example.com/m.gguf. Everything after the function
    name is an input, so inputs may share a name with an option."""
    extra = list(ctx.args)
    if extra and not extra[0].startswith("-"):
        app_target: str | None
        app_target, function = target, extra.pop(0)
    else:
        app_target, function = None, target
    before = [arg for pair in given or [] for arg in ("-i", pair)]
    if app_target is None:
        with _server_client(server, old_url, api_key) as remote:
            schemas = {f["name"]: f["input_schema"] for f in remote.functions()}
            raise typer.Exit(_submit(remote, schemas, function, before + extra, output,
                                     priority, webhook))
    app = load_app(app_target)
    with _reported(), app.local(chosen_store(store, db)) as local:
        schemas = {n: s.input_schema() for n, s in app.functions.items()}
        raise typer.Exit(_submit(local, schemas, function, before + extra, output,
                                 priority, webhook))


def _submit(client: Client, schemas: dict[str, dict[str, Any]], function: str,
            args: list[str], output: Path | None, priority: int | None,
            webhook: str | None) -> int:
    if function not in schemas:
        raise errors.UnknownFunction(f"no function named {function!r} (known: "
                                     f"{', '.join(sorted(schemas)) or 'none'})")
    inputs = parse_inputs(function, args, schemas[function])
    job = client.submit(function, inputs, priority=priority, webhook=webhook)
    err.print(f"[dim]job {job.id}[/dim]")
    return follow(client, job, output, owned=True)


def watch(job_id: str, server: ServerOption = DEFAULT_SERVER, old_url: OldUrlOption = None,
          api_key: KeyOption = None, output: OutputOption = None) -> None:
    """Follow a job's events from the beginning until it ends. Ctrl-C stops watching
    and leaves the job running (genq cancel JOB_ID cancels it)."""
    with _server_client(server, old_url, api_key) as client:
        raise typer.Exit(follow(client, client.job(job_id), output, owned=False))


def result(job_id: str, server: ServerOption = DEFAULT_SERVER, old_url: OldUrlOption = None,
           api_key: KeyOption = None, output: OutputOption = None,
           wait: Annotated[float | None, typer.Option(help="Seconds to wait.")] = None) -> None:
    """Print (or save with -o) a job's result, waiting for it if needed."""
    with _server_client(server, old_url, api_key) as client:
        raise typer.Exit(print_result(client.job(job_id), output, wait))


def cancel(job_id: str, server: ServerOption = DEFAULT_SERVER, old_url: OldUrlOption = None,
           api_key: KeyOption = None) -> None:
    """Cancel a queued or running job."""
    with _server_client(server, old_url, api_key) as client:
        job = client.cancel(job_id)
        out.print(f"{job.id} {job.status.value}"
                  + (" (cancellation requested)" if job.status.value == "running" else ""))


def jobs(server: ServerOption = DEFAULT_SERVER, old_url: OldUrlOption = None,
         api_key: KeyOption = None,
         function: Annotated[str | None, typer.Option(help="Only this function.")] = None,
         status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
         limit: Annotated[int, typer.Option(help="How many.")] = 20) -> None:
    """List your most recent jobs, with the full ids the other commands take."""
    with _server_client(server, old_url, api_key) as client:
        rows = [("id", "function", "status", "attempts", "created")]
        for job in client.list_jobs(function=function, status=status, limit=limit):
            created = dt.datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d %H:%M:%S")
            rows.append((job.id, job.function, job.status.value, str(job.attempts), created))
        # Plain columns, never wrapped or cut whatever the terminal's width: each id is
        # whole, to copy into genq watch / cancel / result.
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            out.print(line.rstrip(), highlight=False, markup=False, soft_wrap=True)
