"""Serving in this process: what ``genq serve`` and ``genq demo`` do once their options
are read.

Beyond building the ASGI app (``create_server``), a serving process refuses to listen
on a public address without API keys, keeps keys out of the access log, believes
forwarded addresses only from configured proxies, tunes the garbage collector for many
long-lived streams, and gives uvicorn a graceful-shutdown bound longer than the
workers' grace.
The command line only turns options into these arguments and prints what happens.
"""

from __future__ import annotations

import gc
import ipaddress

import uvicorn

from genq.app import App
from genq.server.accesslog import log_config
from genq.server.api import ServerSettings, create_server
from genq.server.auth import ApiKeys
from genq.store.base import Store


class ExposureRefused(ValueError):
    """Listening where anyone could run jobs, with no API keys and no explicit consent."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: ApiKeys, insecure_public: bool) -> None:
    """Raise ExposureRefused for a non-loopback ``host`` without keys or consent."""
    if not keys.enabled and not is_loopback(host) and not insecure_public:
        raise ExposureRefused(
            f"refusing to listen on {host} without API keys: anyone who can reach it could "
            "run jobs. Set GENQ_API_KEYS or --api-keys-file, or pass --insecure-public if "
            "this network is trusted.")


def serve(app: App, store: Store, settings: ServerSettings, *, host: str, port: int,
          log_level: str = "info", forwarded_allow_ips: str | None = None) -> None:
    """Serve ``app`` over ``store`` on ``host:port`` until SIGINT or SIGTERM.

    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the proxies in
    ``forwarded_allow_ips`` (uvicorn's syntax: addresses, networks, ``*``); with none,
    never. uvicorn's own default believes them from 127.0.0.1, so any local process
    could choose the address its wrong keys are counted against."""
    server = create_server(app, store, settings)
    # The server owns this process: thousands of open streams keep many long-lived
    # objects, and full collections over them froze the loop for ~1 s (late heartbeats,
    # bench/bench_sse_idle.py). Freeze what start-up made and collect less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(server, host=host, port=port, log_level=log_level, log_config=log_config(),
                proxy_headers=bool(forwarded_allow_ips),
                forwarded_allow_ips=forwarded_allow_ips or None,
                timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
