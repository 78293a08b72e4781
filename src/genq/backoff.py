"""The one backoff formula: exponential with "equal jitter".

Half of each delay is fixed and half random, so retries of many clients spread out
without any of them retrying at once (which full jitter allows), and no delay passes
``cap``. Used by the worker's job retries, the HTTP client's request retries and the
demo's download retries.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry):
    ``base * 2**attempt``, capped at ``cap``, then half fixed and half random."""
    delay: float = min(cap, base * 2.0 ** max(0, attempt))
    return delay / 2 + random.uniform(0, delay / 2)
