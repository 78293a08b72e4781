"""The SQLite store's one writer: a thread that commits ops in batches (group commit).

Why a thread, and why batches: SQLite serialises writers and every transaction costs a
WAL append, so the store hands every change to one thread as an ``Op`` (statements that
must commit together) and the thread commits whatever has accumulated in a single
transaction, up to ``MAX_BATCH_OPS``. Thousands of submissions or output chunks then
share one commit, and the event loop never waits on the disk.

What it promises, on the loop's side:

* **Order.** Ops are applied in the order ``submit`` was called (one queue, one thread).
* **Durable answers.** ``write`` returns once its op is committed; an op that failed
  raises its own ``sqlite3.Error`` there. A failed batch is retried op by op, so one bad
  op cannot sink its batch-mates: each of those commits on its own and is reported so.
* **One report per commit.** ``on_committed(batch, error)`` runs on the loop after each
  transaction, with the ops it held, in order (the store hands their events to
  followers from there). Futures of ``write`` are resolved before it runs.
* **Backpressure.** More than ``max_pending`` uncommitted ops, or more than
  ``max_pending_bytes`` of them (``Op.size``: a stream of large chunks is few ops and
  many bytes), make ``keep_up`` wait until both are down to half, so appenders that do
  not wait for durability cannot grow memory without bound while the disk lags.
* **A full disk halts.** Once a commit fails because the disk is full (``halts``), no
  op is tried until the loop calls ``resume``: every op already queued fails with the
  same error, in order. So nothing submitted after a failed op can commit before it (a
  later event of a job before an earlier one), and the loop learns of every op the
  failure caught before it writes again (``wait_idle``, then ``resume``).
* **Stop flushes.** ``stop`` commits everything submitted before it, then closes the
  connection and joins the thread.

It knows nothing of jobs: the store's own op type (a subclass of ``Op``) carries what
``on_committed`` needs. Tested directly in tests/test_sqlite_writer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

MAX_PENDING_OPS = 20_000  # appenders wait above this many uncommitted ops (backpressure)
MAX_PENDING_BYTES = 64 << 20  # ... or above this many bytes of them
MAX_BATCH_OPS = 5_000  # ops per transaction

Statement = tuple[str, Any, bool]  # (sql, params, executemany?)


def halts(error: BaseException) -> bool:
    """Whether ``error`` is the disk's, not the op's: no op can commit until space returns."""
    return (isinstance(error, sqlite3.OperationalError)
            and error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL)


@dataclass(slots=True)
class Op:
    """Statements committed together, in one transaction with the rest of a batch."""

    statements: list[Statement]
    # Resolved once committed (``write`` sets it; ops only ``submit``-ted have none).
    future: asyncio.Future[None] | None = field(default=None, kw_only=True)
    size: int = field(default=0, kw_only=True)  # bytes it holds, for backpressure


OpT = TypeVar("OpT", bound=Op)
OnCommitted = Callable[[list[OpT], BaseException | None], None]


class Writer(Generic[OpT]):
    """The single thread that writes to the database, committing ops in batches."""

    def __init__(self, path: Path, on_committed: OnCommitted[OpT],
                 loop: asyncio.AbstractEventLoop, *, max_pending: int = MAX_PENDING_OPS,
                 max_pending_bytes: int = MAX_PENDING_BYTES,
                 max_batch: int = MAX_BATCH_OPS) -> None:
        self._path = path
        self._on_committed = on_committed
        self._loop = loop
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._max_batch = max_batch
        self._pending = 0  # submitted, not yet reported committed (the loop's count)
        self._pending_bytes = 0  # their sizes
        self._drained = asyncio.Event()
        self._idle_waiters: list[asyncio.Future[None]] = []  # see wait_idle
        self._halt: sqlite3.Error | None = None  # the thread's: why every op fails now
        self._ops: queue.SimpleQueue[OpT | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="genq-sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit what was submitted, then end the thread (blocks: call it off the loop)."""
        self._ops.put(None)
        self._thread.join()

    # -- the loop's side -------------------------------------------------------------
    def submit(self, op: OpT) -> None:
        """Queue ``op`` for the next commit, without waiting."""
        self._pending += 1
        self._pending_bytes += op.size
        if self._behind():
            self._drained.clear()
        self._ops.put(op)

    async def write(self, op: OpT) -> None:
        """Submit ``op`` and return once it is committed; raises its error if it failed."""
        op.future = self._loop.create_future()
        self.submit(op)
        await op.future

    async def keep_up(self) -> None:
        """Wait while too many ops are uncommitted (backpressure for ``submit``)."""
        if self._behind():
            await self._drained.wait()

    def _behind(self) -> bool:
        return (self._pending > self._max_pending
                or self._pending_bytes > self._max_pending_bytes)

    async def wait_idle(self) -> None:
        """Return once every op submitted so far is reported (committed or failed)."""
        while self._pending:
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def resume(self) -> None:
        """Try ops again after a full disk halted the writer. Only when idle: the ops
        the halt failed have all been reported, and the thread waits for the next."""
        if self._pending:
            raise RuntimeError("resume() with ops in flight: await wait_idle() first")
        self._halt = None

    def _committed(self, batch: list[OpT], error: BaseException | None) -> None:
        self._pending -= len(batch)
        self._pending_bytes -= sum(op.size for op in batch)
        if (self._pending <= self._max_pending // 2
                and self._pending_bytes <= self._max_pending_bytes // 2):
            self._drained.set()
        if not self._pending and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        for op in batch:
            if op.future is not None and not op.future.done():
                if error is None:
                    op.future.set_result(None)
                else:
                    op.future.set_exception(error)
        self._on_committed(batch, error)

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        try:
            stopping = False
            while not stopping:
                first = self._ops.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        op = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if op is None:
                        stopping = True
                        break
                    batch.append(op)
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[OpT]) -> None:
        if self._halt is not None:
            self._deliver(batch, self._halt)
            return
        try:
            self._apply(conn, batch)
        except sqlite3.Error as exc:
            if halts(exc):
                self._halt = exc
                self._deliver(batch, exc)
                return
            # Isolate the failing op so one bad write cannot sink its batch-mates.
            for op in batch:
                self._commit_alone(conn, op)
            return
        self._deliver(batch, None)

    def _commit_alone(self, conn: sqlite3.Connection, op: OpT) -> None:
        if self._halt is not None:
            self._deliver([op], self._halt)
            return
        try:
            self._apply(conn, [op])
        except sqlite3.Error as exc:
            if halts(exc):
                self._halt = exc
            self._deliver([op], exc)
        else:
            self._deliver([op], None)

    @staticmethod
    def _apply(conn: sqlite3.Connection, batch: list[OpT]) -> None:
        conn.execute("BEGIN")
        try:
            for op in batch:
                for sql, params, many in op.statements:
                    if many:
                        conn.executemany(sql, params)
                    else:
                        conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself after some errors (a full disk among them), and
            # a COMMIT that failed may leave the transaction open: end it either way.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _deliver(self, batch: list[OpT], error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._committed, batch, error)
