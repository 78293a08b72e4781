"""Serving in this process: what ``genq serve`` and ``genq demo`` do once their options
are read.

Beyond building the ASGI app (``create_server``), a serving process refuses to listen
on a public address without API keys, answers to the name it listens on (besides the
loopback names, ``security.Exposure``), keeps keys out of the access log, believes
forwarded addresses only from configured proxies, tunes the garbage collector for many
long-lived streams, serves with genq's connection limits (``connections.GuardedConfig``)
and gives uvicorn a graceful-shutdown bound longer than the workers' grace.
The command line only turns options into these arguments and prints what happens.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
from dataclasses import replace

import uvicorn

from genq.app import App
from genq.server.accesslog import log_config
from genq.server.api import ServerSettings, create_server
from genq.server.auth import ApiKeys
from genq.server.connections import GuardedConfig
from genq.server.security import Exposure, is_loopback
from genq.store.base import Store


class ExposureRefused(ValueError):
    """Listening where anyone could run jobs, with no API keys and no explicit consent."""


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
    exposure = answering_to(host, settings.exposure)
    server = create_server(app, store, replace(settings, exposure=exposure))
    # The server owns this process: thousands of open streams keep many long-lived
    # objects, and full collections over them froze the loop for ~1 s (late heartbeats,
    # bench/bench_sse_idle.py). Freeze what start-up made and collect less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    config = GuardedConfig(server, settings.limits, host=host, port=port,
                           log_level=log_level, log_config=log_config(),
                           proxy_headers=bool(forwarded_allow_ips),
                           forwarded_allow_ips=forwarded_allow_ips or None,
                           timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
    with contextlib.suppress(KeyboardInterrupt):  # the signal uvicorn re-raises after stopping
        uvicorn.Server(config).run()


def answering_to(host: str, exposure: Exposure) -> Exposure:
    """``exposure`` with the address the server listens on among its host names, unless
    that is 0.0.0.0 or :: (every address of the machine: no name a client would send)."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            return exposure
    return Exposure(hosts=(*exposure.hosts, host), origins=exposure.origins)
