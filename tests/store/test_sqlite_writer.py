"""The SQLite store's writer thread (genq.store.sqlite_writer), on its own: order, group
commit, an error kept to its own op, backpressure, and a stop that flushes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.store.sqlite_writer import Op, Writer

pytestmark = pytest.mark.anyio

Reports = list[tuple[list[Op], BaseException | None]]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "writer.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
    yield path


def insert(*rows: tuple[int, str]) -> Op:
    return Op([("INSERT INTO t (id, value) VALUES (?, ?)", list(rows), True)])


def sized(op: Op, size: int = 1_000) -> Op:
    op.size = size
    return op


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, value FROM t ORDER BY rowid").fetchall()


def writer(path: Path, reports: Reports, **limits: int) -> Writer[Op]:
    return Writer(path, lambda batch, error: reports.append((batch, error)),
                  asyncio.get_running_loop(), **limits)


async def test_a_burst_commits_once_in_submission_order(db: Path) -> None:
    reports: Reports = []
    w = writer(db, reports)
    ops = [insert((i, f"v{i}")) for i in range(100)]
    for op in ops[:-1]:
        w.submit(op)
    last = asyncio.ensure_future(w.write(ops[-1]))
    await asyncio.sleep(0)  # write() has submitted its op (else the thread may start first)
    w.start()  # the thread finds all of them waiting: one transaction
    try:
        await last
    finally:
        await asyncio.to_thread(w.stop)
    assert reports == [(ops, None)]
    assert rows(db) == [(i, f"v{i}") for i in range(100)]


async def test_batches_are_capped(db: Path) -> None:
    reports: Reports = []
    w = writer(db, reports, max_batch=10)
    for i in range(25):
        w.submit(insert((i, "x")))
    w.start()
    await asyncio.to_thread(w.stop)  # stop commits everything submitted before it
    await asyncio.sleep(0)  # the reports are delivered on the loop
    assert [len(batch) for batch, _ in reports] == [10, 10, 5]
    assert len(rows(db)) == 25


async def test_a_failing_op_fails_alone(db: Path) -> None:
    reports: Reports = []
    w = writer(db, reports)
    before, bad, after = insert((1, "a")), insert((2, "b"), (1, "duplicate")), insert((3, "c"))
    writes = [asyncio.ensure_future(w.write(op)) for op in (before, bad, after)]
    await asyncio.sleep(0)  # every write submitted before the thread runs
    w.start()
    try:
        results = await asyncio.gather(*writes, return_exceptions=True)
    finally:
        await asyncio.to_thread(w.stop)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    # Retried one by one: each batch-mate committed on its own, and reported so.
    assert [(batch, type(error)) for batch, error in reports] == [
        ([before], type(None)), ([bad], sqlite3.IntegrityError), ([after], type(None))]
    assert rows(db) == [(1, "a"), (3, "c")]  # nothing of the failed op


@pytest.mark.parametrize("limit", [{"max_pending": 4}, {"max_pending_bytes": 4_000}],
                         ids=["ops", "bytes"])
async def test_keep_up_waits_while_too_much_is_uncommitted(
        db: Path, limit: dict[str, int]) -> None:
    """Past 4 uncommitted ops, or past 4,000 bytes of them (ops of 1,000 bytes)."""
    reports: Reports = []
    w = writer(db, reports, **limit)
    for i in range(3):
        w.submit(sized(insert((i, "x"))))
    await w.keep_up()  # within the limit: no wait
    for i in range(3, 10):
        w.submit(sized(insert((i, "x"))))
    waiting = asyncio.ensure_future(w.keep_up())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing is being committed yet
    w.start()
    try:
        await asyncio.wait_for(waiting, 10)
    finally:
        await asyncio.to_thread(w.stop)
    assert len(rows(db)) == 10
