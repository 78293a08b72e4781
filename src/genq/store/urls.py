"""The store URL: which store a process opens, and the query options read the same way
by every backend.

Which store: the URL given (``--store``, ``--db``, ``app.local(store)``), else
``$GENQ_STORE``, else ``$GENQ_DB``, else ``sqlite:///.genq/genq.sqlite3`` (``store_url``).
Which backend reads it is the scheme's business (``genq.store.store_from_url``), and each
backend's ``from_url`` parses its own options, so a backend's options are written down
next to what they configure. What is common lives here: the query as a dict, an option
converted with the URL named in the error, and ``retain``, which every backend takes
and which ``--retain`` overrides (``UNSET``: no override, the URL's or the default).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from typing import Final, TypeVar
from urllib.parse import parse_qs, urlsplit

from genq.store.retention import DEFAULT_RETAIN, parse_retain

DEFAULT_STORE_URL = "sqlite:///.genq/genq.sqlite3"

T = TypeVar("T")


class Unset(enum.Enum):
    """No value given: take the URL's (or the default)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


def store_url(given: str | os.PathLike[str] | None = None) -> str:
    """The store to use: ``given``, else $GENQ_STORE, else $GENQ_DB, else the default."""
    return os.fspath(given or os.environ.get("GENQ_STORE") or os.environ.get("GENQ_DB")
                     or DEFAULT_STORE_URL)


def scheme(url: str) -> str:
    """The URL's scheme, lower case; ``""`` for a plain path."""
    return urlsplit(url).scheme if "://" in url else ""


def query_options(url: str) -> dict[str, str]:
    """The URL's query parameters; the last one wins when one is repeated."""
    return {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}


def option(url: str, query: Mapping[str, str], name: str, parse: Callable[[str], T],
           default: T) -> T:
    """``parse(query[name])``, or ``default`` when absent; a value ``parse`` refuses is a
    ValueError that names the URL."""
    if name not in query:
        return default
    try:
        return parse(query[name])
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None


def retain_option(url: str, query: Mapping[str, str],
                  override: float | Unset | None = UNSET) -> float | None:
    """The retention window: ``override`` if given (``--retain``), else the URL's
    ``retain``, else the default. A bad ``retain`` in the URL is refused either way."""
    default: float | None = DEFAULT_RETAIN
    retain = option(url, query, "retain", parse_retain, default)
    return retain if override is UNSET else override


def parse_flag(text: str) -> bool:
    """A yes/no URL parameter (``fair_share=0``): 1/0, true/false, yes/no, on/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use 1 or 0)")
