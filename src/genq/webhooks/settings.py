"""How a server sends webhooks: the secret, how long and how hard it tries, where it may
connect. ``WebhookSettings.from_env`` reads ``$GENQ_WEBHOOK_*`` (docs/webhooks.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from genq.downloads.policy import DownloadPolicy, address_settings
from genq.store.retention import parse_retain
from genq.webhooks.signing import check_secret

DEFAULT_RETRY_FOR = 86400.0  # a delivery is tried for a day, then given up


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    secret: str | None = None  # the server's whsec_ secret; API keys may have their own
    retry_for: float = DEFAULT_RETRY_FOR  # seconds a delivery is retried before it expires
    timeout: float = 10.0  # seconds one attempt may take, connecting included
    concurrency: int = 16  # deliveries in flight per server process
    backoff_base: float = 1.0  # the first retry after about this many seconds...
    backoff_cap: float = 600.0  # ...doubling up to this (genq.backoff)
    coalesce: float = 0.5  # progress/output: one delivery per job per this many seconds
    poll: float = 0.5  # how often a running job's log is looked at for new events
    # Which receivers: public addresses only unless allowed, checked at connect time.
    policy: DownloadPolicy = field(default_factory=lambda: DownloadPolicy(max_bytes=None))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ,
                 secret: str | None = None) -> WebhookSettings:
        """``secret`` (``--webhook-secret``) or ``GENQ_WEBHOOK_SECRET``;
        ``GENQ_WEBHOOK_RETRY_FOR`` (a duration: 30m, 12h, 1d); and which addresses:
        ``GENQ_WEBHOOK_ALLOW_PRIVATE`` (1/true/yes) and ``GENQ_WEBHOOK_ALLOW_NETWORKS``
        (comma-separated CIDRs). ValueError naming the setting."""
        secret = secret or environ.get("GENQ_WEBHOOK_SECRET") or None
        if secret is not None:
            try:
                check_secret(secret)
            except ValueError as exc:
                raise ValueError(f"GENQ_WEBHOOK_SECRET / --webhook-secret: {exc}") from None
        retry_for = DEFAULT_RETRY_FOR
        if text := environ.get("GENQ_WEBHOOK_RETRY_FOR", "").strip():
            try:
                retry_for = parse_retain(text) or 0.0
            except ValueError:
                retry_for = 0.0
            if retry_for <= 0:
                raise ValueError(f"GENQ_WEBHOOK_RETRY_FOR must be a duration such as 30m, "
                                 f"12h or 1d, not {text!r}")
        allow_private, networks = address_settings(environ, "GENQ_WEBHOOK")
        policy = DownloadPolicy(allow_private, networks, None)
        return cls(secret=secret, retry_for=retry_for, policy=policy)
