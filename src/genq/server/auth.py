"""API keys: each key names an owner, and an owner sees only its own jobs.

Keys come from ``GENQ_API_KEYS`` ("key=owner,key2=owner2"; a bare key is its own
owner) or a file with one ``key=owner`` per line. With no keys configured every caller
is the owner ``local`` (the same owner ``app.local()`` uses), which ``genq serve`` only
allows on a loopback address.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from starlette.requests import HTTPConnection

from genq.errors import GenqError

OPEN_OWNER = "local"


class Unauthorized(GenqError):
    code = "unauthorized"
    status = 401


class ApiKeys:
    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self._keys = dict(keys or {})

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        keys: dict[str, str] = {}
        for item in text.replace("\n", ",").split(","):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            key, _, owner = item.partition("=")
            keys[key.strip()] = owner.strip() or key.strip()
        return cls(keys)

    @classmethod
    def from_env(cls, file: str | Path | None = None) -> ApiKeys:
        text = os.environ.get("GENQ_API_KEYS", "")
        if file is not None:
            text += "\n" + Path(file).read_text()
        return cls.parse(text)

    def owner_for(self, conn: HTTPConnection) -> str:
        """The owner of the request's key; raises Unauthorized when keys are required."""
        if not self._keys:
            return OPEN_OWNER
        presented = _presented_key(conn)
        if presented is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY' "
                               "(or the api_key query parameter for EventSource)")
        for key, owner in self._keys.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                return owner
        raise Unauthorized("the API key is not valid")


def _presented_key(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.headers.get("x-api-key") or conn.query_params.get("api_key")
