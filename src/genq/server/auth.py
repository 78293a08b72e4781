"""API keys: each key names an owner, and an owner sees only its own jobs.

Keys come from ``GENQ_API_KEYS`` or a file, one entry per line or comma:
``KEY=OWNER [admin] [rate=20/s] [burst=40]``; a bare key is its own owner. ``admin``
lets a key read cluster-wide operations data (/metrics, every owner's figures in
/api/stats); ``rate`` overrides the server's per-key request rate limit. With no keys
configured every caller is the owner ``local`` (the same owner ``app.local()`` uses),
an administrator, which ``genq serve`` only allows on a loopback address.

A presented key is hashed and compared with every configured key's hash in constant
time, whether or not an earlier one matched, so response timing tells nothing about
how much of a key was right or which key it was close to.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, replace
from pathlib import Path

from starlette.requests import HTTPConnection

from genq.errors import Unauthorized
from genq.server.ratelimit import Rate

OPEN_OWNER = "local"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is from: the owner of its key, and what that key may do."""

    owner: str
    admin: bool = False
    rate: Rate | None = None  # this key's own limit, else the server's
    key_id: str = ""  # names the key in rate-limit buckets without holding the key


OPEN_CALLER = Caller(OPEN_OWNER, admin=True, key_id="open")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_entry(item: str) -> tuple[str, Caller]:
    key, _, rest = item.partition("=")
    key = key.strip()
    words = rest.split()
    owner = words[0] if words else key
    admin, rate_text, burst = False, None, None
    for word in words[1:]:
        name, _, value = word.partition("=")
        if word == "admin":
            admin = True
        elif name == "rate" and value:
            rate_text = value
        elif name == "burst" and value.isdigit():
            burst = int(value)
        else:
            raise ValueError(f"API key entry for owner {owner!r}: unknown option {word!r} "
                             "(expected admin, rate=N/unit or burst=N)")
    rate = None if rate_text is None else Rate.parse(rate_text, burst)
    return key, Caller(owner, admin, rate)


class ApiKeys:
    def __init__(self, keys: dict[str, str | Caller] | None = None) -> None:
        self._entries: list[tuple[bytes, Caller]] = []
        for key, entry in (keys or {}).items():
            digest = _digest(key)
            caller = entry if isinstance(entry, Caller) else Caller(entry)
            self._entries.append((digest, replace(caller, key_id=digest.hex()[:16])))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        keys: dict[str, str | Caller] = {}
        for item in text.replace("\n", ",").split(","):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            key, caller = _parse_entry(item)
            keys[key] = caller
        return cls(keys)

    @classmethod
    def from_env(cls, file: str | Path | None = None) -> ApiKeys:
        text = os.environ.get("GENQ_API_KEYS", "")
        if file is not None:
            text += "\n" + Path(file).read_text()
        return cls.parse(text)

    def caller_for(self, conn: HTTPConnection) -> Caller:
        """The caller the request's key stands for; raises Unauthorized when keys are
        required and the request has none or a wrong one."""
        if not self._entries:
            return OPEN_CALLER
        presented = presented_key(conn)
        if presented is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY' "
                               "(or the api_key query parameter for EventSource)")
        wanted = _digest(presented)
        found: Caller | None = None
        for digest, caller in self._entries:  # no early exit: constant time over keys
            if hmac.compare_digest(digest, wanted):
                found = caller
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found


def presented_key(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.headers.get("x-api-key") or conn.query_params.get("api_key")
