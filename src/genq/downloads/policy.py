"""What a download may touch: where it writes, which URLs and addresses, how many bytes.

``download()`` trusts its caller. When the URL or the file name comes from a user — the
demo's ``download_model`` takes both from a job's input — the caller names the file
with ``safe_destination`` and passes a ``DownloadPolicy``:

* **Where it writes.** One plain file name inside one folder: no separators, no ``..``,
  nothing that collides with a partial download (``*.part``, ``*.part.json``), and no
  symbolic link at the file or its part files (writes also refuse to follow one).
* **Which URLs.** http and https only, on every redirect hop, and no credentials in the
  URL (they would be sent to the server and kept in the job's input). Proxies and
  ``.netrc`` from the environment are ignored, so nothing else is sent or bypassed
  (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` still name the CAs that are trusted).
* **Which addresses.** The host is resolved when the connection is made and every
  address it has is checked; loopback, private (RFC 1918, CGNAT), link-local (cloud
  metadata at 169.254.169.254), unique-local and site-local IPv6, multicast,
  unspecified and reserved addresses (also inside IPv4-mapped, 6to4, Teredo and NAT64
  IPv6) are refused unless allowed. The connection then goes to the address that was
  checked, so a DNS answer that changes between check and connect (rebinding) cannot
  lead it elsewhere, and a redirect is checked the same way, as it opens its own
  connection.
* **How many bytes.** ``max_bytes`` caps the file: a larger ``Content-Length`` is
  refused before anything is written and a body that goes past it (a server that lies
  or streams forever) is cut off there. Either way the part file is removed.

A refusal raises ``DownloadRefused`` (a ``ValueError``, never a ``DownloadError``: trying
again cannot help, so a job that retries on ``DownloadError`` fails at once).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

DEFAULT_MAX_BYTES = 20 << 30  # 20 GiB: the largest demo download; GENQ_DOWNLOAD_MAX_MB
SCHEMES = ("http", "https")
PART_SUFFIXES = (".part", ".part.json")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class DownloadRefused(ValueError):
    """The download is not allowed: a bad URL, file name or address, or too large."""


class AddressRefused(DownloadRefused):
    """The host resolves to an address the policy does not allow."""


class DownloadTooLarge(DownloadRefused):
    """The file is, or grew, larger than the policy's ``max_bytes``."""


def address_settings(environ: Mapping[str, str], prefix: str
                     ) -> tuple[bool, tuple[IPNetwork, ...]]:
    """``{prefix}_ALLOW_PRIVATE`` (1/true/yes or 0/false/no) and
    ``{prefix}_ALLOW_NETWORKS`` (comma-separated CIDRs): which non-public addresses a
    connection may reach. Downloads and webhooks read theirs alike; ValueError naming
    the setting."""
    flag = environ.get(f"{prefix}_ALLOW_PRIVATE", "").strip().lower()
    if flag not in ("", "0", "false", "no", "1", "true", "yes"):
        raise ValueError(f"{prefix}_ALLOW_PRIVATE must be 1/true/yes or 0/false/no, "
                         f"not {flag!r}")
    networks = []
    for item in environ.get(f"{prefix}_ALLOW_NETWORKS", "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip()))
            except ValueError as exc:
                raise ValueError(f"{prefix}_ALLOW_NETWORKS: {exc}") from None
    return flag in ("1", "true", "yes"), tuple(networks)


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """Limits for downloads of untrusted URLs; the defaults allow public addresses only."""

    allow_private: bool = False  # every non-public address too (trusted networks only)
    allowed_networks: tuple[IPNetwork, ...] = ()  # e.g. an internal mirror's subnet
    max_bytes: int | None = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DownloadPolicy:
        """``GENQ_DOWNLOAD_ALLOW_PRIVATE`` (1/true/yes), ``GENQ_DOWNLOAD_ALLOW_NETWORKS``
        (comma-separated CIDRs) and ``GENQ_DOWNLOAD_MAX_MB`` (MiB, default 20480)."""
        allow_private, networks = address_settings(environ, "GENQ_DOWNLOAD")
        max_bytes = DEFAULT_MAX_BYTES
        if mb := environ.get("GENQ_DOWNLOAD_MAX_MB", "").strip():
            try:
                max_bytes = int(float(mb) * (1 << 20))
            except (ValueError, OverflowError):  # not a number, nan, inf
                max_bytes = 0
            if max_bytes <= 0:
                raise ValueError(f"GENQ_DOWNLOAD_MAX_MB must be a positive number of MiB, "
                                 f"not {mb!r}")
        return cls(allow_private, networks, max_bytes)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is not allowed (a few words), or None when it is."""
        if self.allow_private or any(address in net for net in self.allowed_networks
                                     if net.version == address.version):
            return None
        for inner in _embedded_ipv4(address):
            if reason := _non_public(inner):
                return f"{reason}, embedded in {address}"
        return _non_public(address)

    def check_address(self, host: str, address: IPAddress) -> None:
        if reason := self.refusal(address):
            named = str(address) if host == str(address) else f"{host} ({address})"
            raise AddressRefused(
                f"refused to connect to {named}: {reason}. Downloads reach public addresses "
                f"only unless the download policy allows more (allow_private, "
                f"allowed_networks; for the demo GENQ_DOWNLOAD_ALLOW_PRIVATE=1 or "
                f"GENQ_DOWNLOAD_ALLOW_NETWORKS=<cidr,...>)")

    def check_size(self, url: str, size: int, *, declared: bool) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            what = f"is {size} bytes" if declared else f"sent more than {self.max_bytes} bytes"
            raise DownloadTooLarge(
                f"{url} {what}, over the download limit of {self.max_bytes} bytes "
                f"({self.max_bytes / (1 << 20):g} MiB; GENQ_DOWNLOAD_MAX_MB for the demo)")

    def client(self, *, connect_timeout: float, read_timeout: float) -> httpx.Client:
        """An httpx client whose every request and connection this policy checks."""
        return httpx.Client(transport=_GuardedTransport(self), trust_env=False,
                            follow_redirects=True,
                            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
                            event_hooks={"request": [_check_hop]})


def check_url(url: str | httpx.URL, *, allow_credentials: bool = True) -> httpx.URL:
    """The parsed URL if it is http(s) with a host; else DownloadRefused saying why."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise DownloadRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        shown = f"{parsed.scheme}:" if parsed.scheme else "a URL without a scheme"
        raise DownloadRefused(f"only http and https URLs can be downloaded, not {shown}")
    if not parsed.host:
        raise DownloadRefused(f"the URL has no host: {_redacted(parsed)}")
    if parsed.userinfo and not allow_credentials:
        raise DownloadRefused(f"the URL carries credentials (user:password@), which would be "
                              f"sent to the server and kept with the job: "
                              f"{_redacted(parsed)}")
    return parsed


def name_from_url(url: str) -> str:
    """The URL path's last segment, decoded (``download`` when there is none)."""
    segment = check_url(url).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or "download"


def check_name(name: str) -> str:
    """``name`` if it is one plain file name; else DownloadRefused naming the problem."""
    if not name or name.strip() != name:
        problem = "is empty" if not name.strip() else "starts or ends with a space"
    elif name in (".", ".."):
        problem = "refers to a folder"
    elif any(sep in name for sep in ("/", "\\")):
        problem = "contains a path separator: a name, not a path, is expected"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif name.endswith(PART_SUFFIXES):
        problem = "ends with .part or .part.json, the names of partial downloads"
    elif len(name.encode()) > 255:
        problem = "is longer than 255 bytes"
    else:
        return name
    raise DownloadRefused(f"file name {name[:80]!r} {problem}")


def safe_destination(folder: str | os.PathLike[str], name: str) -> Path:
    """The path of file ``name`` inside ``folder`` (created), refusing anything that could
    write elsewhere: see ``check_name``, and no symbolic link at the file or its parts."""
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    target = root / check_name(name)
    if target.parent != root:  # cannot happen after check_name; the promise, checked
        raise DownloadRefused(f"file name {name!r} leaves the downloads folder")
    for path in (target, *(root / (name + suffix) for suffix in PART_SUFFIXES)):
        if path.is_symlink():
            raise DownloadRefused(f"{path.name} in the downloads folder is a symbolic link; "
                                  f"genq will not write through it")
    if target.is_dir():
        raise DownloadRefused(f"{name} in the downloads folder is a folder")
    return target


def _check_hop(request: httpx.Request) -> None:
    """Each request, redirects included: http(s), no credentials."""
    check_url(request.url, allow_credentials=False)


def _redacted(url: httpx.URL) -> str:
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    found.extend(address.teredo or ())
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _non_public(address: IPAddress) -> str | None:
    checks = (("loopback", address.is_loopback), ("unspecified", address.is_unspecified),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("reserved", address.is_reserved), ("private", address.is_private),
              ("site-local", isinstance(address, ipaddress.IPv6Address)
               and address.is_site_local),
              ("not globally routable", not address.is_global))
    return next((f"a {name} address" for name, hit in checks if hit), None)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, checks every address, connects to a checked one."""

    def __init__(self, policy: DownloadPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(
            ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        for address in addresses:  # one bad address refuses the host
            self._policy.check_address(host, address)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return self._inner.connect_tcp(str(address), port, timeout, local_address,
                                               socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise AddressRefused("downloads do not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that connects through _GuardedBackend.

    httpx has no parameter for the network backend, so the pool it made is replaced.
    Certificates still come from SSL_CERT_FILE / SSL_CERT_DIR: the operator's CAs."""

    def __init__(self, policy: DownloadPolicy) -> None:
        super().__init__(trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True), max_connections=10,
            max_keepalive_connections=10, keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy))
