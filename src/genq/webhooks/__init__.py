"""Webhooks: a job's events posted to a URL given at submission (docs/webhooks.md).

``verify(headers, body, secret)`` is for receivers; the rest is the server's:
``target.py`` (the submission's URL and event filter, checked), ``deliveries.py``
(which delivery comes next, coalesced), ``signing.py`` (Standard Webhooks headers,
with the ``standardwebhooks`` library), ``transport.py`` (where a delivery may
connect), ``settings.py`` and ``sender.py`` (the task that sends, durable, with
retries). The records live in the store (genq/store/webhooks.py).
"""

from genq.webhooks.signing import WebhookVerificationError, new_secret, verify
from genq.webhooks.target import EVENTS

__all__ = ["EVENTS", "WebhookVerificationError", "new_secret", "verify"]
