"""Per-caller request rate limits: a token bucket per API key (and per client
address for failed sign-ins), answered with 429 and ``Retry-After``.

Buckets live in the front end's memory, so behind a load balancer each front end
enforces the limit on its own share of the traffic (docs/api.md, "Rate limits").
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from genq.errors import RateLimited

MAX_TRACKED = 100_000  # callers remembered at once; the least recently seen are dropped

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` requests on average, bursts of up to ``burst``."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> Rate:
        """``"20/s"``, ``"600/min"``, ``"1000/h"``, ``"5/10s"``; the burst defaults to
        one second's worth (at least 1)."""
        match = _RATE.match(text.lower())
        if match is None or match.group(3) not in _UNITS:
            raise ValueError(f"{text!r} is not a rate like 20/s, 600/min or 1000/h")
        count, every, unit = float(match.group(1)), match.group(2), match.group(3)
        period = _UNITS[unit] * (int(every) if every else 1)
        if count <= 0 or period <= 0:
            raise ValueError(f"{text!r}: a rate must be positive")
        per_second = count / period
        return cls(per_second, burst if burst is not None else max(1, math.ceil(per_second)))

    def __str__(self) -> str:
        return f"{self.per_second:g}/s (bursts of {self.burst})"


class RateLimiter:
    """Token buckets by caller: ``charge(caller, rate)`` spends one token or raises
    RateLimited saying when the next one is due."""

    def __init__(self) -> None:
        # caller -> (tokens, updated_at), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def charge(self, caller: str, rate: Rate, what: str = "requests") -> None:
        """Spend a token, or raise RateLimited if there is none."""
        self._take(caller, rate, what, 1.0)

    def check(self, caller: str, rate: Rate, what: str = "requests") -> None:
        """Raise RateLimited if ``caller`` has no token left, without spending one."""
        self._take(caller, rate, what, 0.0)

    def _take(self, caller: str, rate: Rate, what: str, cost: float) -> None:
        now = time.monotonic()
        tokens, updated = self._buckets.pop(caller, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - updated) * rate.per_second)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = (1.0 - tokens) / rate.per_second
            raise RateLimited(f"too many {what}: the limit is {rate}; retry in "
                              f"{wait:.1f} s", retry_after=max(1, math.ceil(wait)),
                              limit_per_second=rate.per_second, burst=rate.burst)
        self._buckets[caller] = (tokens - cost, now)
        if len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
