"""Where a delivery may connect: the download guard's rules (genq.downloads.policy) on
an async connection. The host is resolved when the connection is made, every address it
has is checked with ``DownloadPolicy.refusal`` (public addresses only unless allowed),
and the connection goes to the checked address, so a DNS answer that changes between
check and connect cannot lead it elsewhere. Redirects are not followed (a delivery
answered 3xx failed), and proxies from the environment are not used."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

from genq.downloads.policy import AddressRefused, DownloadPolicy


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, connects to a checked one."""

    def __init__(self, policy: DownloadPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(
            ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        for address in addresses:  # one refused address refuses the host
            if (reason := self._policy.refusal(address)) is not None:
                named = str(address) if host == str(address) else f"{host} ({address})"
                raise AddressRefused(
                    f"refused to connect to {named}: {reason}. Webhooks reach public "
                    f"addresses only unless the server allows more "
                    f"(GENQ_WEBHOOK_ALLOW_PRIVATE=1 or GENQ_WEBHOOK_ALLOW_NETWORKS=<cidr>)")
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout,
                                                     local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("webhooks do not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's async transport over a pool that connects through GuardedBackend (httpx
    takes no network backend, so the pool it made is replaced, as downloads do)."""

    def __init__(self, policy: DownloadPolicy, max_connections: int) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),
            max_connections=max_connections, max_keepalive_connections=max_connections,
            keepalive_expiry=5.0, network_backend=GuardedBackend(policy))


def guarded_client(policy: DownloadPolicy, *, timeout: float,
                   max_connections: int) -> httpx.AsyncClient:
    """The client deliveries are posted with."""
    return httpx.AsyncClient(transport=GuardedTransport(policy, max_connections),
                             trust_env=False, follow_redirects=False,
                             timeout=httpx.Timeout(timeout))
