"""A submission's webhook: the URL and event filter checked at submit, so a request that
can never be delivered is refused with 400 naming the problem rather than retried for a
day. Hosts are resolved only when a delivery connects (transport.py); here an address
written in the URL is checked against the same policy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import httpx

from genq.downloads.policy import DownloadPolicy
from genq.errors import BadRequest

EVENTS = ("started", "progress", "output", "completed")  # completed is always sent
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    events: tuple[str, ...]  # in EVENTS order, completed included


def webhook_target(url: Any, events: Any, policy: DownloadPolicy) -> WebhookTarget:
    """The checked ``webhook`` and ``webhook_events`` of a submission; BadRequest naming
    the field and the problem otherwise."""
    if not isinstance(url, str) or not url:
        raise BadRequest('"webhook" must be the URL deliveries are posted to',
                         field="webhook")
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f'"webhook" is longer than {MAX_URL_LENGTH} characters',
                         field="webhook")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BadRequest(f'"webhook" is not a valid URL: {exc}', field="webhook") from None
    if parsed.scheme not in ("http", "https"):
        raise BadRequest(f'"webhook" must be an http or https URL, not {url[:80]!r}',
                         field="webhook")
    if not parsed.host:
        raise BadRequest('"webhook" has no host', field="webhook")
    if parsed.userinfo:
        raise BadRequest('"webhook" carries credentials (user:password@); put a token in '
                         "the path or query instead, or verify the signature",
                         field="webhook")
    try:
        address = ipaddress.ip_address(parsed.host)
    except ValueError:
        address = None  # a name: resolved and checked when a delivery connects
    if address is not None and (reason := policy.refusal(address)) is not None:
        raise BadRequest(f'"webhook" points at {address}, {reason}: webhooks reach public '
                         "addresses only unless the server allows more "
                         "(GENQ_WEBHOOK_ALLOW_PRIVATE, GENQ_WEBHOOK_ALLOW_NETWORKS)",
                         field="webhook")
    if events is None:
        events = []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise BadRequest('"webhook_events" must be a list of event names: '
                         + ", ".join(EVENTS), field="webhook_events")
    if unknown := sorted(set(events) - set(EVENTS)):
        raise BadRequest(f'"webhook_events" names unknown events {", ".join(unknown)}; '
                         f"known: {', '.join(EVENTS)}", field="webhook_events")
    chosen = {*events, "completed"}
    return WebhookTarget(url, tuple(e for e in EVENTS if e in chosen))
