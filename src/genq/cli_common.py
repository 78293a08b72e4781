"""What the ``genq`` command's modules share: the consoles (and ``terminal``, which
keeps stderr's notes on lines of their own), the exit codes, the app loader and the
store options.

Exit codes, for scripts (docs/api.md, "CLI exit codes"): 0 success; 1 the job failed;
2 bad usage or invalid input; 3 unknown job or function; 4 the job was cancelled; 5 the
job expired in the queue; 6 the server could not be reached or is not a genq server;
7 the queue is full; 8 the SQLite store is in use by another process; 130 interrupted
(Ctrl-C: ``genq run`` cancels its job first, ``genq watch`` leaves it running).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from genq.app import App
from genq.store import store_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
EXIT_CANCELLED, EXIT_EXPIRED, EXIT_UNREACHABLE, EXIT_QUEUE_FULL = 4, 5, 6, 7
EXIT_STORE_LOCKED, EXIT_INTERRUPTED = 8, 130
EXIT_CODES = ("Exit codes: 0 success, 1 the job failed, 2 bad usage or invalid input, "
              "3 unknown job or function, 4 cancelled, 5 expired in the queue, 6 server "
              "unreachable or not genq, 7 queue full, 8 store locked by another process, "
              "130 interrupted.")

out = Console()
err = Console(stderr=True)

StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="GENQ_STORE", help="Store URL: sqlite:///path or redis://host:port/db "
                                         "(default: --db, $GENQ_DB or .genq/genq.sqlite3).")]


class Terminal:
    """A job's text on stdout and notes on stderr, which start a line of their own: a
    note said while the text is mid-line (both streams on one screen) starts a new one.
    Thread-safe, since the client's loop thread says ``reconnecting…``."""

    def __init__(self) -> None:
        self.mid_line = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            out.file.write(text)
            out.file.flush()
            if text:
                self.mid_line = not text.endswith("\n")

    def note(self, markup: str) -> None:
        with self._lock:
            if self.mid_line:
                err.print()
                self.mid_line = False
            err.print(markup, highlight=False)


terminal = Terminal()


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
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name.partition(".")[0] and exc.name != module_name:
                raise  # the app's own import failed: its traceback is the help
            raise typer.BadParameter(f"no module named {module_name!r} (APP is "
                                     "module:app or path/to/file.py:app)") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise typer.BadParameter(f"{target} is not a genq.App")
    return app


def chosen_store(store: str | None, db: Path | None) -> str:
    """--db (a SQLite file) if given, else --store / $GENQ_STORE, else the default."""
    return store_url(db or store)


def store_locked(pid: object) -> str:
    """The one line a second process on a SQLite store prints (then exits 8)."""
    return f"store locked by pid {pid}; stop it or use another --db"
