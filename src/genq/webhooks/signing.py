"""Signing and verifying deliveries, as the Standard Webhooks spec says, with its
reference library (``standardwebhooks``) rather than a signer of our own.

A delivery carries ``webhook-id`` (the same on every attempt), ``webhook-timestamp``
(Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` + base64 of
HMAC-SHA256 over ``id.timestamp.body`` with the secret, which is written
``whsec_`` + base64 of its bytes. Receivers check it with ``verify`` (or any
Standard Webhooks library), which also refuses timestamps more than 5 minutes away.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "check_secret", "new_secret", "signed_headers",
           "verify"]

PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec asks for 24 to 64 random bytes


def check_secret(text: str) -> str:
    """``text`` if it is a secret in the ``whsec_<base64>`` form; ValueError saying why."""
    if not text.startswith(PREFIX):
        raise ValueError(f"a webhook secret is written {PREFIX}<base64 of its bytes> "
                         f"(e.g. python -c 'import genq.webhooks as w; "
                         f"print(w.new_secret())')")
    try:
        raw = base64.b64decode(text[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the webhook secret after {PREFIX} is not base64") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"the webhook secret has {len(raw)} bytes; at least "
                         f"{MIN_SECRET_BYTES} are needed")
    return text


def new_secret() -> str:
    """A fresh secret of 32 random bytes, in the ``whsec_`` form."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, webhook_id: str, body: str, now: float) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    timestamp = datetime.fromtimestamp(int(now), tz=UTC)
    signature = Webhook(secret).sign(webhook_id, timestamp, body)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(now)),
            "webhook-signature": signature}


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> Any:
    """The delivery's JSON payload once its signature and timestamp check out with
    ``secret`` (``whsec_...``); raises WebhookVerificationError otherwise. ``headers``:
    any mapping of the request's headers (names in any case)."""
    return Webhook(secret).verify(body, dict(headers.items()))
