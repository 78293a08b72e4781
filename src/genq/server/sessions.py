"""UI sessions: the web UI trades its API key once for a signed cookie, so the key never
has to ride in a URL (where access logs, browser history and proxies keep it).

A browser cannot put an ``Authorization`` header on an EventSource, an ``<img>`` or a
download link; before sessions the UI sent ``?api_key=`` on each, and every access log
on the way recorded the key. Now ``POST /api/session`` (the key in the header) answers
with an HttpOnly, SameSite=Strict cookie holding ``v1.<key id>.<expiry>.<HMAC>``: it
names the key by its id (a prefix of its SHA-256, never the key), expires, and is signed
with a secret derived from every configured key's digest. Deriving it, rather than
drawing it at random per process, lets every front end with the same keys accept the
cookie and lets it outlive a restart; forging one needs every configured key. The
cookie is read only on GET and HEAD: it lets the UI read, never submit or cancel, so a
request forged by another site could do nothing even if a browser sent the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

SESSION_COOKIE = "genq_session"
SESSION_SECONDS = 3600  # the UI renews its session well before this
_VERSION = "v1"


class SessionSigner:
    """Signs and checks session tokens with one secret."""

    def __init__(self, key_digests: Iterable[bytes]) -> None:
        material = b"".join(sorted(key_digests))
        self._secret = hashlib.sha256(b"genq-ui-session\0" + material).digest()

    def _mac(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, key_id: str, now: float | None = None) -> tuple[str, int]:
        """A token for the key ``key_id`` and the time it expires (Unix seconds)."""
        expires = int(now if now is not None else time.time()) + SESSION_SECONDS
        payload = f"{_VERSION}.{key_id}.{expires}"
        return f"{payload}.{self._mac(payload)}", expires

    def verify(self, token: str, now: float | None = None) -> str | None:
        """The key id a genuine, unexpired token names; None for anything else."""
        payload, _, mac = token.rpartition(".")
        version, _, rest = payload.partition(".")
        key_id, _, expires = rest.partition(".")
        if version != _VERSION or not expires.isdigit():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        if int(expires) <= (now if now is not None else time.time()):
            return None
        return key_id
