"""Webhook records in the SQLite file (store/webhooks.py says what they are).

Two tables beside the jobs: ``webhooks`` (a record per job, as JSON, with its due time
and fencing token in columns so due records are one index range) and
``webhook_attempts`` (the attempt log). Writes go through the store's writer thread
and are durable when they return; reads use its read-only connection. One process owns
the file, so the lease of ``claim_due`` only has to outlive this process's own sender:
the first claim after a start makes every unfinished record due at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from genq.store.webhooks import MAX_ATTEMPTS_KEPT, Attempt, Webhook

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    job_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    token INTEGER NOT NULL DEFAULT 0,
    due_at REAL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS webhooks_by_due ON webhooks(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS webhooks_by_done ON webhooks(done_at) WHERE done_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS webhook_attempts (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    attempt TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
"""

Statements = list[tuple[str, Any, bool]]


class SQLiteWebhooks:
    """``WebhookStore`` over the store's writer (``commit``) and reader connection."""

    def __init__(self, commit: Callable[[Statements], Awaitable[None]],
                 reader: Callable[[], sqlite3.Connection]) -> None:
        self._commit = commit
        self._reader = reader
        self._recovered = False

    async def add(self, hook: Webhook, due: float) -> Webhook:
        await self._commit([(
            "INSERT OR IGNORE INTO webhooks (job_id, record, token, due_at) "
            "VALUES (?, ?, 0, ?)", (hook.job_id, hook.to_json(), due), False)])
        kept = await self.get(hook.job_id)
        assert kept is not None  # just written, and only purged once done
        return kept

    async def get(self, job_id: str) -> Webhook | None:
        row = self._reader().execute("SELECT record, token FROM webhooks WHERE job_id=?",
                                     (job_id,)).fetchone()
        return None if row is None else Webhook.from_json(row[0], row[1])

    async def attempts(self, job_id: str) -> list[Attempt]:
        rows = self._reader().execute(
            "SELECT attempt FROM webhook_attempts WHERE job_id=? ORDER BY n", (job_id,))
        return [Attempt.from_json(row[0]) for row in rows]

    async def claim_due(self, now: float, limit: int, lease: float) -> list[Webhook]:
        if not self._recovered:  # leases of a process that died die with it
            self._recovered = True
            await self._commit([("UPDATE webhooks SET due_at=? WHERE due_at > ?",
                                 (now, now), False)])
        rows = self._reader().execute(
            "SELECT job_id, record, token FROM webhooks WHERE due_at <= ? ORDER BY due_at "
            "LIMIT ?", (now, limit)).fetchall()
        if not rows:
            return []
        await self._commit([("UPDATE webhooks SET due_at=?, token=token+1 WHERE job_id=?",
                             [(now + lease, row[0]) for row in rows], True)])
        return [Webhook.from_json(record, token + 1) for _, record, token in rows]

    async def save(self, hook: Webhook, due: float | None, attempt: Attempt | None) -> bool:
        row = self._reader().execute("SELECT token FROM webhooks WHERE job_id=?",
                                     (hook.job_id,)).fetchone()
        if row is None or row[0] != hook.token:
            return False
        statements: Statements = [(
            "UPDATE webhooks SET record=?, due_at=?, done_at=? WHERE job_id=? AND token=?",
            (hook.to_json(), due, hook.done_at if due is None else None, hook.job_id,
             hook.token), False)]
        if attempt is not None:
            statements += [
                ("INSERT INTO webhook_attempts (job_id, n, attempt) VALUES (?, (SELECT "
                 "coalesce(max(n), 0) + 1 FROM webhook_attempts WHERE job_id=?), ?)",
                 (hook.job_id, hook.job_id, attempt.to_json()), False),
                ("DELETE FROM webhook_attempts WHERE job_id=? AND n <= (SELECT max(n) "
                 "FROM webhook_attempts WHERE job_id=?) - ?",
                 (hook.job_id, hook.job_id, MAX_ATTEMPTS_KEPT), False)]
        await self._commit(statements)
        return True

    async def purge(self, before: float, limit: int) -> int:
        ids = [(row[0],) for row in self._reader().execute(
            "SELECT job_id FROM webhooks WHERE done_at < ? ORDER BY done_at LIMIT ?",
            (before, limit))]
        if ids:
            await self._commit([("DELETE FROM webhook_attempts WHERE job_id=?", ids, True),
                                ("DELETE FROM webhooks WHERE job_id=?", ids, True)])
        return len(ids)

