"""Keep API keys out of the access log.

Scripts may still send ``?api_key=KEY`` (an EventSource outside a browser, a quick
``curl``), and uvicorn logs every request line with its query string, so the key would
sit in log files, journald and whatever ships them. ``serve`` installs ``RedactApiKeys``
on the ``uvicorn.access`` logger, which rewrites the value of every ``api_key``
parameter (however its name is percent-encoded) before any handler sees the record.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import unquote_plus

import uvicorn.config

REDACTED = "[redacted]"
_SECRET_PARAMS = frozenset({"api_key"})


def redact_url(url: str) -> str:
    """``url`` with the value of each ``api_key`` query parameter replaced."""
    path, question, query = url.partition("?")
    if not question:
        return url
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and unquote_plus(name).lower() in _SECRET_PARAMS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


class RedactApiKeys(logging.Filter):
    """For uvicorn's access records, whose args are (client, method, path and query,
    HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_url(args[2]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with the access log redacted."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_api_keys"] = {"()": RedactApiKeys}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_api_keys"]
    return config
