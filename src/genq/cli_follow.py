"""Showing one job in a terminal, for ``genq run`` and ``genq watch``: its events live
(text output on stdout, notes and progress on stderr), then its result and exit code.

Ctrl-C means what the command is for: ``genq run`` owns the job it submitted and
cancels it (saying ``cancelled job <id>``); ``genq watch`` only looks, so it stops
watching, leaves the job running and says how to cancel it. Both exit 130.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from genq import errors
from genq.cli_common import (
    EXIT_CANCELLED,
    EXIT_EXPIRED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    err,
    out,
    terminal,
)
from genq.cli_waiting import WaitNotes
from genq.client import Artifact, Client, Job
from genq.client.attempts import AttemptWatch
from genq.models import Event, EventType, JobStatus


def follow(client: Client, job: Job, output: Path | None, *, owned: bool) -> int:
    """Render events live, then the result. Returns the exit code. Ctrl-C cancels the
    job when ``owned`` (``genq run``), else leaves it running (``genq watch``)."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                   console=err, transient=True)
    task: TaskID | None = None
    streamed = False
    attempts = AttemptWatch()
    # Why it is still queued (a model loading...), until it starts.
    notes = WaitNotes(job, lambda m: terminal.note(f"[yellow]{m}[/yellow]"))
    try:
        with bar:
            notes.start()
            for event in job.events():
                if event.type is EventType.STARTED or event.terminal:
                    notes.stop()
                if (restart := attempts.see(event)) is not None:
                    # stdout cannot take back the lost run's text: say where it ends
                    terminal.note(f"[yellow]{restart.notice}[/yellow]")
                task, wrote = _render(event, bar, task)
                streamed = streamed or wrote
        notes.stop()
        if streamed:
            terminal.write("\n")
        return print_result(job, output, None, quiet=streamed)
    except KeyboardInterrupt:
        notes.stop()
        if owned:
            _cancel(client, job)
        else:
            terminal.note(f"[yellow]stopped watching; job {job.id} keeps running "
                          f"(to cancel it: genq cancel {job.id})[/yellow]")
        return EXIT_INTERRUPTED
    finally:
        notes.stop()  # also when the stream raised (a lost server)


def _cancel(client: Client, job: Job) -> None:
    terminal.note(f"[yellow]interrupted: cancelling job {job.id}[/yellow]")
    try:
        # this submission's ticket: a job it shares with identical submissions
        # (de-duplication) goes on for them
        info = client.cancel(job.id, ticket=job.ticket)
    except errors.GenqError as exc:
        err.print(f"[red]could not cancel job {job.id}[/red]: {exc.message}",
                  highlight=False)
        return
    if info.status is JobStatus.RUNNING:  # it stops at its next progress or output
        terminal.note(f"[yellow]cancelled job {job.id} (it stops at its next step)[/yellow]")
    else:
        terminal.note(f"[yellow]cancelled job {job.id}[/yellow]")


def _render(event: Event, bar: Progress, task: TaskID | None) -> tuple[TaskID | None, bool]:
    data = event.data
    if event.type is EventType.QUEUED:
        terminal.note(f"[dim]queued, position {data.get('position')}[/dim]")
    elif event.type is EventType.STARTED:
        terminal.note(f"[dim]started (attempt {data.get('attempt')})[/dim]")
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
            terminal.write(chunk)
            return task, True
        out.print_json(json.dumps(chunk))
    elif event.type is EventType.LOG:
        terminal.note(f"[dim]{data.get('level', 'info')}: {data.get('message')}[/dim]")
    elif event.type is EventType.RETRYING:
        reason = data.get("reason") or (data.get("error") or {}).get("message", "")
        terminal.note(f"[yellow]retrying (attempt {data.get('next_attempt')}) in "
                      f"{data.get('delay')} s: {reason}[/yellow]")
    return task, False


def print_result(job: Job, output: Path | None, wait: float | None,
                 quiet: bool = False) -> int:
    """Print (or save) the job's result once it ends; its exit code."""
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
