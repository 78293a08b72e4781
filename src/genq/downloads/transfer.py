"""Resumable, verified HTTP downloads: the model-download workload done right.

``download(url, dest)`` streams to ``dest.part`` and records what it is fetching in
``dest.part.json`` (URL, validator, size). After a dropped connection it resumes from
the last byte written with ``Range`` (guarded by ``If-Range`` so a changed file starts
over instead of being spliced), and so does a later call — a retried or restarted job —
for the same destination. The bytes are hashed as they arrive (the kept part is hashed
once on resume) and checked against ``sha256`` before the file is moved into place
atomically. It is blocking code: run it inside a sync genq function, where it reports
bytes, rate and ETA through ``Progress`` and stops at cancellation.

It trusts its caller with the URL and path. For a URL from a user, pass a
``DownloadPolicy`` (``genq.downloads.policy``: addresses, redirects, size) and make the
path with ``safe_destination``. Part files are never opened through a symbolic link.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx

from genq.backoff import backoff_delay
from genq.downloads.policy import DownloadPolicy, DownloadRefused, DownloadTooLarge, check_url
from genq.errors import PermanentError
from genq.progress import Progress

CHUNK = 1 << 20


class DownloadError(Exception):
    """The download could not be completed (after its retries)."""


class PermanentDownloadError(DownloadError, PermanentError):
    """The server answered that the file cannot be had (401, 403, 404, 410): asking again
    cannot help, so it is not retried, here or by a job whose ``retry_on`` names
    ``DownloadError`` (``genq.PermanentError``). ``status``: the HTTP status."""

    def __init__(self, status: int, url: str) -> None:
        try:
            phrase = f" {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        super().__init__(f"HTTP {status}{phrase} for {url}")
        self.status = status
        self.url = url


# Answers that running again cannot change: the file is not there, or not for us.
PERMANENT_STATUSES = frozenset({401, 403, 404, 410})


class ChecksumMismatch(DownloadError):
    """The finished file's sha256 is not the expected one (the part file is removed)."""


@dataclass(frozen=True, slots=True)
class DownloadResult:
    path: str
    size: int
    sha256: str
    transferred: int  # bytes received over the network by this call
    resumed: int  # how many times this call continued from a partial file
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "transferred": self.transferred, "resumed": self.resumed,
                "attempts": self.attempts}


class _Retryable(Exception):
    pass


_FLAGS = {"rb": os.O_RDONLY, "r+b": os.O_RDWR, "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}


def _open(path: Path, mode: str) -> Any:
    """``open`` that fails rather than follow a symbolic link planted at a part file."""
    return os.fdopen(os.open(path, _FLAGS[mode] | getattr(os, "O_NOFOLLOW", 0), 0o644), mode)


def _hash_file(path: Path, digest: Any) -> int:
    size = 0
    with _open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size


class _Part:
    """The partial file plus the sidecar that says what it is a part of."""

    def __init__(self, dest: Path, url: str) -> None:
        self.path = dest.with_name(dest.name + ".part")
        self.meta_path = dest.with_name(dest.name + ".part.json")
        self.url = url

    def load(self) -> dict[str, Any]:
        """The sidecar if it belongs to this URL and a part exists; else start clean."""
        try:
            meta: dict[str, Any] = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("url") != self.url or not self.path.exists():
            self.discard()
            return {"url": self.url}
        return meta

    def save(self, meta: dict[str, Any]) -> None:
        with _open(self.meta_path, "w") as f:
            f.write(json.dumps(meta))

    def discard(self) -> None:
        for p in (self.path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@dataclass(slots=True)
class _Attempt:
    """What one request achieved, kept even when it fails part-way."""

    offset: int  # bytes already in the part file when it started
    digest: Any  # sha256 of the part file so far
    received: int = 0
    resumed: bool = False


def download(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None,
             progress: Progress | None = None, connect_timeout: float = 10.0,
             read_timeout: float = 30.0, retries: int = 10, backoff: float = 0.5,
             client: httpx.Client | None = None,
             policy: DownloadPolicy | None = None) -> DownloadResult:
    """Download ``url`` to ``dest``, resuming partial data; verify ``sha256`` if given.

    With a ``policy`` every connection and redirect is checked and the size capped
    (``DownloadRefused`` says what was refused); it makes its own client, so not both."""
    if client is not None and policy is not None:
        raise TypeError("download() takes a client or a policy, not both")
    check_url(url, allow_credentials=policy is None)
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(target, url)
    own_client = client is None
    if policy is not None:
        http = policy.client(connect_timeout=connect_timeout, read_timeout=read_timeout)
    else:
        http = client or httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout), follow_redirects=True)
    report = progress or Progress()
    transferred = resumed = 0
    started = time.monotonic()
    try:
        for attempt_no in range(retries + 1):
            report.check()
            meta = part.load()
            digest = hashlib.sha256()
            offset = _hash_file(part.path, digest) if part.path.exists() else 0
            attempt = _Attempt(offset, digest)
            try:
                _fetch(http, part, meta, attempt, report, started, transferred, policy)
            except DownloadTooLarge:
                part.discard()  # bytes past the limit are of no use: free the disk
                raise
            except _Retryable as exc:
                if attempt_no == retries:
                    raise DownloadError(f"download of {url} failed after {attempt_no + 1} "
                                        f"attempts: {exc}") from None
                time.sleep(backoff_delay(attempt_no, backoff, cap=30.0))
                continue
            finally:
                transferred += attempt.received
                resumed += attempt.resumed
            actual = attempt.digest.hexdigest()
            if sha256 is not None and actual.lower() != sha256.lower():
                part.discard()
                raise ChecksumMismatch(f"sha256 of {url} is {actual}, expected {sha256}")
            size = part.path.stat().st_size
            os.replace(part.path, target)
            part.discard()
            return DownloadResult(str(target), size, actual, transferred, resumed,
                                  attempt_no + 1)
        raise AssertionError("unreachable")
    finally:
        if own_client:
            http.close()


def _fetch(http: httpx.Client, part: _Part, meta: dict[str, Any], attempt: _Attempt,
           report: Progress, started: float, before: int,
           policy: DownloadPolicy | None) -> None:
    """One request, appending to the part file; raises _Retryable when it can go on."""
    headers = {"Accept-Encoding": "identity"}
    validator = meta.get("etag") or meta.get("last_modified")
    if attempt.offset and validator:
        headers["Range"] = f"bytes={attempt.offset}-"
        headers["If-Range"] = validator
    try:
        with http.stream("GET", part.url, headers=headers) as response:
            status = response.status_code
            if status == 416 and attempt.offset and attempt.offset == meta.get("size"):
                attempt.resumed = True  # the part is already whole
                return
            if status >= 500 or status == 429:
                raise _Retryable(f"HTTP {status}")
            if status in PERMANENT_STATUSES:
                raise PermanentDownloadError(status, part.url)
            if status not in (200, 206):
                raise DownloadError(f"HTTP {status} for {part.url}")
            attempt.resumed = status == 206
            if not attempt.resumed:  # a full body: no range support, or the file changed
                attempt.offset = 0
                attempt.digest = hashlib.sha256()
            total = _total_size(response, attempt.offset)
            if policy is not None and total is not None:  # refused before a byte is kept
                policy.check_size(part.url, total, declared=True)
            meta.update(url=part.url, etag=response.headers.get("etag"),
                        last_modified=response.headers.get("last-modified"), size=total)
            part.save(meta)
            resumed_from = attempt.offset if attempt.resumed else 0
            if resumed_from:  # said once, and in every progress line: not a start over
                report.log(f"resumed from byte {resumed_from:,}"
                           + (f" of {total:,}" if total else ""))
            with _open(part.path, "r+b" if attempt.resumed else "wb") as f:
                f.seek(attempt.offset)
                f.truncate()
                for block in response.iter_bytes(CHUNK):
                    report.check()
                    if policy is not None:  # a body longer than announced is cut off here
                        policy.check_size(part.url, attempt.offset + attempt.received
                                          + len(block), declared=False)
                    f.write(block)
                    attempt.digest.update(block)
                    attempt.received += len(block)
                    _report(report, attempt.offset + attempt.received, total,
                            before + attempt.received, started, resumed_from)
            done = attempt.offset + attempt.received
            if total is not None and done < total:
                raise _Retryable(f"connection closed at byte {done} of {total}")
    except httpx.UnsupportedProtocol as exc:  # a redirect to ftp:, file:...
        raise DownloadRefused(f"{part.url}: {exc}") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None


def _total_size(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return None if length is None else offset + int(length)


def _report(progress: Progress, done: int, total: int | None, transferred: int,
            started: float, resumed_from: int = 0) -> None:
    elapsed = time.monotonic() - started
    rate = transferred / elapsed if elapsed > 0 else None
    eta = (total - done) / rate if rate and total else None
    resumed = f", resumed from {resumed_from / 1e6:.1f} MB" if resumed_from else ""
    progress(current=done, total=total, unit="B", rate=rate, eta=eta,
             desc=f"downloading ({done / 1e6:.1f} of "
                  + (f"{total / 1e6:.1f} MB" if total else "? MB") + f"{resumed})")
