"""API keys: each key names an owner, and an owner sees only its own jobs.

Keys come from ``GENQ_API_KEYS`` (entries separated by commas or lines) and a keys file
(one entry per line; a word starting with ``#`` starts a comment). An entry is words
separated by spaces: the first word is the key, verbatim, and options follow:
``owner=NAME``, ``admin`` (may read cluster-wide operations data: /metrics, every
owner's figures in /api/stats), ``rate=20/s`` and ``burst=40`` (this key's own
request rate limit), ``max_queued=100`` and ``max_running=4`` (the owner's quotas, else
the server's ``--owner-max-queued`` / ``--owner-max-running``; docs/sharing.md),
``webhook_secret=whsec_...`` (signs the webhooks of this key's jobs instead of the
server's secret; genq.webhooks)::

    q0Zb3kJx9u1mYc2LwQe7Hg== owner=alice admin
    3f9a0c7d2e51b4a8 owner=bob rate=5/s max_queued=100 max_running=4

Keys are what generators print, and those end in ``=`` (base64 padding), so the first
word is never split at a trailing ``=``. The older ``KEY=OWNER`` form is still read
where it cannot be misread: one ``=`` with text on both sides. A first word that mixes
the two (``abc==alice``, ``a=b=c``) is refused, since no rule can tell where the key
ends. A key without ``owner=`` is owner ``key-`` + 8 hex digits of its SHA-256: a
stable name that shows up in dashboards and /api/stats without showing the key.
Empty keys, empty owners and a key given twice are refused at start-up, naming the
entry, so a typo cannot merge two users or make an empty ``?api_key=`` valid.

With no keys configured every caller is the owner ``local`` (the same owner
``app.local()`` uses), an administrator, which ``genq serve`` only allows on a loopback
address. A presented key is hashed and compared with every configured key's hash in
constant time, whether or not an earlier one matched, so response timing tells nothing
about how much of a key was right or which key it was close to.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.requests import HTTPConnection

from genq.errors import Unauthorized
from genq.server.ratelimit import Rate
from genq.server.sessions import SESSION_COOKIE, SessionSigner
from genq.store.base import Quota
from genq.webhooks.signing import check_secret

OPEN_OWNER = "local"
ENV_VAR = "GENQ_API_KEYS"
_COMMENT = re.compile(r"(^|\s)#.*")  # '#' at the start of a word: a comment to the line's end
_ENTRY_FORM = ("'KEY owner=NAME [admin] [rate=N/unit] [burst=N] [max_queued=N] "
               "[max_running=N]'")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is from: the owner of its key, and what that key may do."""

    owner: str
    admin: bool = False
    rate: Rate | None = None  # this key's own limit, else the server's
    key_id: str = ""  # names the key in rate-limit buckets and sessions, not the key
    webhook_secret: str | None = None  # signs this key's jobs' webhooks (whsec_...)
    quota: Quota = field(default_factory=Quota)  # max_queued, max_running; else the server's


OPEN_CALLER = Caller(OPEN_OWNER, admin=True, key_id="open")


class WrongApiKey(Unauthorized):
    """A key was presented and it is not one of ours: what the per-address lockout
    counts (a request without a key is answered 401 without counting). On the wire it
    is ``unauthorized`` like any 401; it has no code of its own."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def derived_owner(key: str) -> str:
    """The owner name of a key listed without ``owner=``: stable, and not the key."""
    return "key-" + _digest(key).hex()[:8]


def _split_key(word: str, where: str) -> tuple[str, str | None]:
    """The key in an entry's first word, and its owner if written the old ``KEY=OWNER``
    way; refuses a word where the key's end cannot be told."""
    head, equals, tail = word.partition("=")
    if equals and not head:
        raise ValueError(f"{where}: the key before '=' is empty")
    if not equals or not tail.strip("="):
        return word, None  # no '=' at all, or only trailing padding: the key verbatim
    if "=" not in tail:
        return head, tail
    raise ValueError(f"{where}: the first word has '=' followed by more text, so where "
                     f"the key ends is ambiguous; write the key verbatim (with its '=' "
                     f"padding) and its owner as an option: {_ENTRY_FORM}")


def parse_entry(text: str, where: str) -> tuple[str, Caller]:
    """One entry: the key and who it stands for. ``where`` names the entry in errors."""
    first, *options = text.split()
    key, owner = _split_key(first, where)
    admin, rate_text, burst, webhook_secret = False, None, None, None
    limits: dict[str, int] = {}  # max_queued, max_running
    seen: set[str] = set()
    for word in options:
        name, equals, value = word.partition("=")
        if name in seen or (name == "owner" and owner is not None):
            raise ValueError(f"{where}: {name} is given twice")
        seen.add(name)
        if word == "admin":
            admin = True
        elif equals and name == "owner":
            if not value:
                raise ValueError(f"{where}: the owner name is empty")
            owner = value
        elif equals and name == "rate" and value:
            rate_text = value
        elif equals and name == "burst" and value.isdigit():
            burst = int(value)
        elif equals and name == "webhook_secret":
            try:
                webhook_secret = check_secret(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        elif equals and name in ("max_queued", "max_running"):
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{where}: {name} must be a whole number of jobs, 1 or "
                                 f"more, not {value!r}")
            limits[name] = int(value)
        else:
            raise ValueError(f"{where}: unknown option {word!r} (expected owner=NAME, "
                             "admin, rate=N/unit, burst=N, max_queued=N, max_running=N or "
                             "webhook_secret=whsec_...)")
    try:
        rate = None if rate_text is None else Rate.parse(rate_text, burst)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return key, Caller(owner if owner is not None else derived_owner(key), admin, rate,
                       webhook_secret=webhook_secret,
                       quota=Quota(limits.get("max_queued"), limits.get("max_running")))


def _entries(text: str, source: str | None) -> Iterator[tuple[str, str]]:
    """(entry, where) for each entry of ``GENQ_API_KEYS`` (``source`` None: commas and
    lines, numbered) or of a keys file (lines, named by line number)."""
    number = 0
    for line_no, line in enumerate(text.splitlines(), 1):
        for item in _COMMENT.sub("", line).split(","):
            item = item.strip()
            if not item:
                continue
            number += 1
            yield item, (f"{ENV_VAR} entry {number}" if source is None
                         else f"{source} line {line_no}")


class ApiKeys:
    """The configured keys, by digest; ``caller_for`` says who a request is."""

    def __init__(self, keys: Mapping[str, str | Caller] | None = None) -> None:
        self._entries: list[tuple[bytes, Caller]] = []
        self._by_id: dict[str, Caller] = {}
        for key, entry in (keys or {}).items():
            caller = entry if isinstance(entry, Caller) else Caller(entry)
            if not key or not caller.owner:
                raise ValueError("API keys and owner names may not be empty")
            digest = _digest(key)
            caller = replace(caller, key_id=digest.hex()[:16])
            self._entries.append((digest, caller))
            self._by_id[caller.key_id] = caller
        self.sessions = SessionSigner(digest for digest, _ in self._entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @classmethod
    def parse(cls, text: str, source: str | None = None) -> ApiKeys:
        """Keys from ``GENQ_API_KEYS`` text, or from a keys file named ``source``."""
        return cls.from_sources([(text, source)])

    @classmethod
    def from_sources(cls, sources: list[tuple[str, str | None]]) -> ApiKeys:
        keys: dict[str, Caller] = {}
        key_seen: dict[str, str] = {}  # key -> the entry that listed it
        derived_seen: dict[str, str] = {}  # derived owner name -> the entry that uses it
        for text, source in sources:
            for item, where in _entries(text, source):
                key, caller = parse_entry(item, where)
                if key in key_seen:
                    raise ValueError(f"{where}: the same key as {key_seen[key]}; a key "
                                     "may appear once (give it one owner)")
                key_seen[key] = where
                if caller.owner == derived_owner(key):
                    if caller.owner in derived_seen:
                        raise ValueError(
                            f"{where}: its derived owner name {caller.owner} is also "
                            f"{derived_seen[caller.owner]}'s; give one of them owner=NAME")
                    derived_seen[caller.owner] = where
                keys[key] = caller
        return cls(keys)

    @classmethod
    def from_env(cls, file: str | Path | None = None) -> ApiKeys:
        """``$GENQ_API_KEYS`` plus the entries of ``file``; ValueError naming the entry
        for anything that cannot be read unambiguously."""
        sources: list[tuple[str, str | None]] = [(os.environ.get(ENV_VAR, ""), None)]
        if file is not None:
            try:
                sources.append((Path(file).read_text(), str(file)))
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the keys file {file}: {exc}") from None
        return cls.from_sources(sources)

    def webhook_secret(self, key_id: str) -> str | None:
        """The ``webhook_secret=`` of the key named ``key_id``, if it has one."""
        caller = self._by_id.get(key_id)
        return None if caller is None else caller.webhook_secret

    def lookup(self, key: str) -> Caller | None:
        """The caller ``key`` stands for, compared in constant time over every key."""
        wanted = _digest(key)
        found: Caller | None = None
        for digest, caller in self._entries:  # no early exit: constant time over keys
            if hmac.compare_digest(digest, wanted):
                found = caller
        return found

    def caller_for(self, conn: HTTPConnection) -> Caller:
        """The caller the request's key (or, on a read, UI session) stands for.

        Raises WrongApiKey for a key that is not ours, Unauthorized when there is no
        key or the session is not (or no longer) valid."""
        if not self._entries:
            return OPEN_CALLER
        presented = presented_key(conn)
        if presented is not None:
            caller = self.lookup(presented)
            if caller is None:
                raise WrongApiKey("the API key is not valid")
            return caller
        token = conn.cookies.get(SESSION_COOKIE)
        if token and conn.scope.get("method") in ("GET", "HEAD"):
            caller = self._by_id.get(self.sessions.verify(token) or "")
            if caller is None:
                raise Unauthorized("the UI session has expired or its key was removed; "
                                   "sign in again (POST /api/session)")
            return caller
        raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY' "
                           "(or the api_key query parameter)")


def presented_key(conn: HTTPConnection) -> str | None:
    """The key a request carries: ``Authorization: Bearer``, ``X-API-Key`` or
    ``?api_key=``, in that order; an empty one is no key."""
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return conn.headers.get("x-api-key") or conn.query_params.get("api_key") or None
