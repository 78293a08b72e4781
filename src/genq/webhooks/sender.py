"""``WebhookSender``: the task of a server process that sends the jobs' deliveries.

Why it is shaped this way:

* **Durable.** Nothing lives only in memory: a job's webhook record (store/webhooks.py)
  holds its cursor into the job's event log and the pending delivery, written before
  the first attempt, so a restart or a killed process resends the same delivery (same
  ``webhook-id``, same body) and loses none. Delivery is at least once.
* **Off the jobs' path.** Workers never wait for a receiver: the sender reads the event
  log the workers already write, on its own tasks, each attempt bounded by
  ``timeout`` (connecting included) and at most ``concurrency`` at once per process.
* **One sender per delivery.** Records are claimed with a lease (``claim_due``), so
  with Redis and many front ends each job's deliveries go out from one process at a
  time, and a record whose process died is taken over when the lease lapses.
* **In order per job.** A job's next delivery is made only after the pending one
  succeeded (2xx) or expired (``retry_for`` after it was made, retried with
  genq.backoff in between).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from genq.backoff import backoff_delay
from genq.downloads.policy import DownloadRefused
from genq.models import Job, JobStatus
from genq.store.base import Store
from genq.store.webhooks import Attempt, Delivery, Webhook
from genq.webhooks.deliveries import next_step
from genq.webhooks.settings import WebhookSettings
from genq.webhooks.signing import signed_headers
from genq.webhooks.target import WebhookTarget
from genq.webhooks.transport import guarded_client

log = logging.getLogger("genq.webhooks")

QUEUED_POLL = 1.0  # seconds between looks at a queued job's log (nothing to send yet)
PURGE_EVERY = 60.0  # seconds between sweeps of finished records past retention
USER_AGENT = "genq-webhooks"


class WebhookSender:
    """Sends the deliveries of every job with a webhook in ``store``. ``secrets`` turns
    a record's secret reference (``""``: the server's, else an API key id) into the
    ``whsec_`` secret, or None when it is not configured (any more)."""

    def __init__(self, store: Store, settings: WebhookSettings,
                 secrets: Callable[[str], str | None]) -> None:
        self.store = store
        self.settings = settings
        self.secrets = secrets
        # Held past one attempt, so a dead process's deliveries wait at most this long.
        self.lease = settings.timeout + 10.0
        self._busy: set[str] = set()
        self._wake: anyio.Event | None = None  # made by ``run``, on its loop
        self._running: anyio.CancelScope | None = None

    def stop(self) -> None:
        """End ``run``: attempts in flight are cut, and sent again after a restart."""
        if self._running is not None:
            self._running.cancel()

    def wake(self) -> None:
        """Look for due deliveries now (a webhook was added, a job changed)."""
        if self._wake is not None:
            self._wake.set()

    async def subscribe(self, job: Job, target: WebhookTarget, secret: str) -> None:
        """Give ``job`` the webhook ``target`` unless it has one; durable when it
        returns. ``secret``: which secret signs (see the class)."""
        now = time.time()
        await self.store.webhooks.add(Webhook(job.id, target.url, target.events, secret,
                                              now), due=now)
        self.wake()

    async def report(self, job_id: str) -> dict[str, Any]:
        """What ``GET /api/jobs/{id}/webhooks`` shows: the webhook (None if the job has
        none), its pending delivery and the attempts so far, oldest first."""
        hook = await self.store.webhooks.get(job_id)
        if hook is None:
            return {"webhook": None, "attempts": []}
        pending = None if hook.pending is None else {
            "id": hook.pending.id, "type": hook.pending.type,
            "attempts": hook.pending.attempts, "next_attempt_at": hook.pending.next_at,
            "expires_at": hook.pending.expires_at}
        attempts = await self.store.webhooks.attempts(job_id)
        return {"webhook": {"url": hook.url, "events": list(hook.events),
                            "done": hook.done_at is not None, "pending": pending},
                "attempts": [a.to_dict() for a in attempts]}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        settings = self.settings
        client = guarded_client(settings.policy, timeout=settings.timeout,
                                max_connections=max(1, settings.concurrency))
        self._running = anyio.CancelScope()
        with self._running:
            async with client, anyio.create_task_group() as tg:
                task_status.started()
                await self._loop(client, tg)

    async def _loop(self, client: httpx.AsyncClient, tg: anyio.abc.TaskGroup) -> None:
        settings = self.settings
        purged_at = 0.0
        while True:
            self._wake = wake = anyio.Event()
            now = time.time()
            free = settings.concurrency - len(self._busy)
            try:
                hooks = (await self.store.webhooks.claim_due(now, free, self.lease)
                         if free > 0 else [])
                if self.store.retain is not None and now - purged_at > PURGE_EVERY:
                    purged_at = now
                    await self.store.webhooks.purge(now - self.store.retain, 500)
            except Exception as exc:  # the store is away: try again at the next tick
                log.warning("genq: webhook deliveries wait for the store: %s", exc)
                hooks = []
            for hook in hooks:
                if hook.job_id not in self._busy:
                    self._busy.add(hook.job_id)
                    tg.start_soon(self._work, client, hook)
            with anyio.move_on_after(min(settings.poll, settings.coalesce)):
                await wake.wait()

    async def _work(self, client: httpx.AsyncClient, hook: Webhook) -> None:
        try:
            await self._deliver(client, hook)
        except anyio.get_cancelled_exc_class():
            # Stopping: the record is due again at once, for the next process or start,
            # rather than when its lease lapses; an attempt cut short is sent again.
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.store.webhooks.save(hook, time.time(), None)
            raise
        except Exception:  # the lease lapses and the record is taken up again
            log.exception("genq: webhook deliveries of job %s failed", hook.job_id)
        finally:
            self._busy.discard(hook.job_id)
            self.wake()

    async def _deliver(self, client: httpx.AsyncClient, hook: Webhook) -> None:
        """Send the job's deliveries while each succeeds, within the lease."""
        webhooks = self.store.webhooks
        held_until = time.monotonic() + self.lease - self.settings.timeout - 1.0
        while True:
            now = time.time()
            if hook.pending is None:
                # The log first, then the job: its view is as new as the events it reports.
                events = await self.store.read_events(hook.job_id, hook.cursor, 1000)
                job = await self.store.get_job(hook.job_id)
                if job is None:  # deleted (retention) or never stored: nothing to send
                    hook.done_at = now
                    await webhooks.save(hook, None, None)
                    return
                step = next_step(hook, events, job, now, coalesce=self.settings.coalesce,
                                 retry_for=self.settings.retry_for)
                hook.cursor = step.cursor
                if step.delivery is None:
                    due = step.wait_until or now + (
                        QUEUED_POLL if job.status is JobStatus.QUEUED else self.settings.poll)
                    await webhooks.save(hook, due, None)
                    return
                hook.pending = step.delivery
                if step.delivery.type in ("job.progress", "job.output"):
                    hook.coalesced_at = now
                # Durable before the first attempt: a restart resends the same delivery.
                if not await webhooks.save(hook, now + self.lease, None):
                    return
            delivery = hook.pending
            if now >= delivery.expires_at:
                attempt = Attempt(delivery.id, delivery.type, now, "expired",
                                  error=f"given up after {delivery.attempts} attempts in "
                                        f"{self.settings.retry_for:g} s")
            else:
                attempt = await self._attempt(client, hook, delivery)
                delivery.attempts += 1
            if attempt.outcome == "failed":
                delivery.next_at = min(delivery.expires_at, time.time() + backoff_delay(
                    delivery.attempts - 1, self.settings.backoff_base,
                    self.settings.backoff_cap))
                await webhooks.save(hook, delivery.next_at, attempt)
                return
            hook.pending = None
            if delivery.type == "job.completed":
                hook.done_at = time.time()
                await webhooks.save(hook, None, attempt)
                return
            if time.monotonic() >= held_until:  # let the lease go: due again now
                await webhooks.save(hook, time.time(), attempt)
                return
            if not await webhooks.save(hook, time.time() + self.lease, attempt):
                return

    async def _attempt(self, client: httpx.AsyncClient, hook: Webhook,
                       delivery: Delivery) -> Attempt:
        started = time.time()

        def failed(error: str, status: int | None = None) -> Attempt:
            return Attempt(delivery.id, delivery.type, started, "failed", status, error,
                           round(time.time() - started, 3))

        secret = self.secrets(hook.secret)
        if secret is None:
            return failed("no webhook secret to sign with: the API key that submitted the "
                          "job has no webhook_secret any more, or the server none")
        headers = {**signed_headers(secret, delivery.id, delivery.body, started),
                   "content-type": "application/json", "user-agent": USER_AGENT}
        status: int | None = None
        try:
            with anyio.fail_after(self.settings.timeout):
                async with client.stream("POST", hook.url, content=delivery.body.encode(),
                                         headers=headers) as response:
                    status = response.status_code
        except TimeoutError:
            return failed(f"no answer within {self.settings.timeout:g} s")
        except DownloadRefused as exc:  # the address guard
            return failed(str(exc))
        except httpx.HTTPError as exc:
            return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if not 200 <= status < 300:
            return failed(f"the receiver answered {status}", status)
        return Attempt(delivery.id, delivery.type, started, "delivered", status, None,
                       round(time.time() - started, 3))

