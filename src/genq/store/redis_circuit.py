"""What one process knows of Redis being down: a circuit breaker, and the outages it saw.

Two promises rest on it:

* **Fail fast.** Once one call has waited ``retry_for`` for Redis in vain, the store is
  known to be down: every further call fails at once with ``StoreUnavailable`` (HTTP 503
  with Retry-After) instead of each waiting ``retry_for`` again, until a probe (one PING
  every ``PROBE_INTERVAL`` s, run by the store) finds Redis back. Workers' own writes do
  not give up: they wait it out above the store (``genq.patience``).
* **An outage is nobody's fault.** While Redis is away no worker can renew its leases,
  so when it comes back every lease taken before looks lapsed. A lease counts only time
  the store could be reached: ``lease_lapsed`` pushes a lease's end back by each outage
  that began while it held (a lease renewed after the outage is not extended), so its
  worker gets the rest of its lease, after the store is back, to renew it, and another
  worker's housekeeping does not judge it dead. A worker cut off alone (its own
  network) is still reclaimed on time by the others, which saw no outage: from outside
  it cannot be told from a dead one. Each process knows only the outages it saw
  itself, which every worker does (its maintenance calls the store every second).

Times are wall-clock (``time.time()``), like the leases they are compared with.
"""

from __future__ import annotations

import collections
import math
import time

from genq.errors import StoreUnavailable

PROBE_INTERVAL = 0.5  # seconds between PINGs while the circuit is open
RETRY_AFTER = 1  # seconds a refused caller is told to wait (the Retry-After header)
KEPT_OUTAGES = 16  # the latest outages, enough for any lease alive today


class Circuit:
    """Closed (calls go to Redis) or open (they fail at once); the outages seen."""

    def __init__(self) -> None:
        self.opened = False
        self._last_ok = time.time()  # the latest call Redis answered
        self._down_since: float | None = None  # last_ok when calls began to fail
        self.outages: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=KEPT_OUTAGES)  # (down, back), oldest first

    def check(self) -> None:
        """Raise at once while the store is known to be down."""
        if self.opened:
            raise unavailable("the Redis store is down (a probe will find it back)")

    def failed(self) -> None:
        """A call could not reach Redis."""
        if self._down_since is None:
            self._down_since = self._last_ok

    def open(self) -> None:
        """A call waited ``retry_for`` in vain: fail fast from now on."""
        self.failed()
        self.opened = True

    def answered(self) -> None:
        """Redis answered a call or a probe: closed again, the outage recorded."""
        now = time.time()
        self._last_ok = now
        if self._down_since is not None:
            self.outages.append((self._down_since, now))
            self._down_since = None
            self.opened = False

    def lease_lapsed(self, lease_at: float | None, lease_until: float, now: float) -> bool:
        """Whether a lease granted or last renewed at ``lease_at`` (None: unknown) and
        ending at ``lease_until`` has lapsed by ``now``, counting only time this process
        could reach the store: each outage that began before the lease ended and ended
        after it was granted pushes its end back by the part of the outage it spans."""
        until = lease_until
        granted = -math.inf if lease_at is None else lease_at
        for down, back in self.outages:
            if granted < back and down < until:
                until += back - max(down, granted)
        return until <= now

def unavailable(message: str) -> StoreUnavailable:
    return StoreUnavailable(message, retry_after=RETRY_AFTER)
